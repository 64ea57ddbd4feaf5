"""The stores' shared cosine scan: the same numbers on both sides of the single-thread cut."""

from __future__ import annotations

import numpy as np
import pytest

from clipseek.stores import topk


@pytest.mark.parametrize("rows", [1, 7, 3000])
def test_cosines_equal_a_float64_sum_on_both_paths(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(rows)
    V = rng.standard_normal((rows, 64)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    q = V[rows // 2]
    expected = [sum(float(a) * float(b) for a, b in zip(row, q)) for row in V]
    for cut in (10**9, 0):  # everything on the calling thread, then everything through BLAS
        monkeypatch.setattr(topk, "SINGLE_THREAD_SCAN", cut)
        got = topk.cosines(V, q)
        assert got.shape == (rows,) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert got[rows // 2] == pytest.approx(1.0, abs=2e-6)
