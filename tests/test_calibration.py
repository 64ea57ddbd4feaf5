"""Calibration: the logistic map from raw cosine to score, and its inverse, at many points.

Expected numbers are written out by hand (or with math.exp/math.log in the test), never by
calling Calibration, so a sign flip or a wrong slope cannot agree with itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipseek.encoders.base import Calibration, Encoder

TEXT = Calibration(0.25, 0.05)
IMAGE = Calibration(0.8, 0.02)


@pytest.mark.parametrize(
    "cal, cosine, expected",
    [
        (TEXT, 0.25, 0.5),
        (TEXT, 0.30, 0.7310585786300049),  # 1 / (1 + e^-1)
        (TEXT, 0.20, 0.2689414213699951),  # 1 / (1 + e^1)
        (TEXT, 0.35, 0.8807970779778823),  # 1 / (1 + e^-2)
        (TEXT, 0.15, 0.11920292202211755),
        (TEXT, 0.40, 0.9525741268224334),  # 1 / (1 + e^-3)
        (TEXT, 0.0, 1 / (1 + math.exp(5))),
        (TEXT, 1.0, 1 / (1 + math.exp(-15))),
        (TEXT, -1.0, 1 / (1 + math.exp(25))),
        (IMAGE, 0.8, 0.5),
        (IMAGE, 0.82, 0.7310585786300049),  # the slope is 1/scale: 0.02 here
        (IMAGE, 0.84, 0.8807970779778823),
        (IMAGE, 0.77, 1 / (1 + math.exp(1.5))),
        (Calibration(0.0, 1.0), 0.5, 1 / (1 + math.exp(-0.5))),
        (Calibration(-0.2, 0.1), 0.0, 0.8807970779778823),
    ],
)
def test_score_at_several_points(cal: Calibration, cosine: float, expected: float) -> None:
    got = cal.score(cosine)
    assert type(got) is float
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


def test_score_saturates_without_overflow() -> None:
    # z = (cosine - center) / scale is floored at -60: no overflow warning (pytest makes
    # warnings errors), and the low tail is the logistic value at -60
    assert TEXT.score(-10.0) == pytest.approx(1 / (1 + math.exp(60)), rel=1e-12, abs=0)
    assert TEXT.score(-2.75) == pytest.approx(1 / (1 + math.exp(60)), rel=1e-12, abs=0)  # z = -60 exactly
    assert TEXT.score(-2.70) == pytest.approx(1 / (1 + math.exp(59)), rel=1e-9, abs=0)  # z = -59
    assert TEXT.score(10.0) == 1.0
    assert TEXT.score(1e6) == 1.0
    assert Calibration(0.0, 1e-6).score(-1.0) == pytest.approx(1 / (1 + math.exp(60)), rel=1e-12, abs=0)


def test_score_of_an_array_is_an_array() -> None:
    got = TEXT.score(np.array([0.20, 0.25, 0.30]))
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, [0.2689414213699951, 0.5, 0.7310585786300049], rtol=1e-12)
    assert type(TEXT.score(np.float32(0.25))) is float
    # float32 cosines (what stores return) are scored in float64
    c32 = np.array([0.3, 0.26], dtype=np.float32)
    got = TEXT.score(c32)
    assert got.dtype == np.float64
    want = [1 / (1 + math.exp(-(float(c) - 0.25) / 0.05)) for c in c32]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert TEXT.score(np.float32(0.26)) == pytest.approx(want[1], rel=1e-15)


@pytest.mark.parametrize(
    "cal, score, expected",
    [
        (TEXT, 0.5, 0.25),
        (TEXT, 0.7310585786300049, 0.30),
        (TEXT, 0.2689414213699951, 0.20),
        (TEXT, 0.9, 0.25 + 0.05 * math.log(9)),  # 0.3598612288668110
        (TEXT, 0.1, 0.25 - 0.05 * math.log(9)),  # 0.1401387711331890
        (TEXT, 0.99, 0.25 + 0.05 * math.log(99)),
        (IMAGE, 0.5, 0.8),
        (IMAGE, 0.8807970779778823, 0.84),
        (IMAGE, 0.25, 0.8 - 0.02 * math.log(3)),
        (Calibration(-0.2, 0.1), 0.75, -0.2 + 0.1 * math.log(3)),
    ],
)
def test_cosine_at_several_scores(cal: Calibration, score: float, expected: float) -> None:
    assert cal.cosine_at(score) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_at_the_ends() -> None:
    # a threshold of 0 lets every cosine through, a threshold of 1 none (cosines are at most 1)
    assert TEXT.cosine_at(0.0) == -1.0
    assert TEXT.cosine_at(-0.5) == -1.0
    assert TEXT.cosine_at(1.0) == 1.0 + 1e-6
    assert TEXT.cosine_at(1.5) == 1.0 + 1e-6
    assert TEXT.cosine_at(1e-300) == pytest.approx(0.25 + 0.05 * math.log(1e-300), rel=1e-12)


def test_cosine_at_inverts_score() -> None:
    for cal in (TEXT, IMAGE):
        for c in (-0.3, 0.1, 0.26, 0.5, 0.79, 0.81, 0.9):
            s = 1 / (1 + math.exp(-(c - cal.center) / cal.scale))
            if 0 < s < 1:
                assert cal.cosine_at(s) == pytest.approx(c, abs=1e-9)


def test_default_calibration_values() -> None:
    assert Encoder.calibration == {"text": Calibration(0.25, 0.05), "image": Calibration(0.8, 0.05)}
