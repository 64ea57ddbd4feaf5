"""Concurrent queries share one model call: :class:`BatchingEncoder`.

Request threads each call ``embed_text(q)`` or ``embed_image(img)`` for their one query. The wrapper
queues those calls per kind; the first caller of a round leads it: it waits ``window`` seconds for
company, then runs the queued queries (at most ``max_batch``) as one ``embed_texts`` /
``embed_images`` call of the wrapped encoder and hands every caller its row. Queries that arrive
while a batch runs queue for the next one, whose leader is the oldest of them (so no thread serves
others forever), and it starts as soon as the model is free: under load the batches grow by
themselves even with ``window = 0``. One batch per kind runs at a time.

Rows are what the unbatched calls return: the base Encoder embeds, cuts and normalises each row
independently (tested with the real offline model). Every other attribute and method (batch calls
from ingest, ``load_image``, ``info``, ``calibration``, ``prepare`` ...) goes to the wrapped encoder
unchanged.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np
from PIL import Image

from ..encoders.base import Encoder

T = TypeVar("T")

#: queries in one model call at most
MAX_BATCH = 32

#: called after each model call with (kind, batch size, seconds)
OnBatch = Callable[[str, int, float], None]


class _Call(Generic[T]):
    __slots__ = ("arg", "row", "error", "ready", "lead")

    def __init__(self, arg: T) -> None:
        self.arg = arg
        self.row: np.ndarray | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()  # set when ``row``/``error`` is filled or the call must lead
        self.lead = False

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.row is not None
        return self.row


class Coalescer(Generic[T]):
    """Runs ``batch_fn(list of args) -> (n, dim) rows`` for calls from many threads, a batch at a time."""

    def __init__(
        self, kind: str, batch_fn: Callable[[list[T]], np.ndarray], window: float, max_batch: int,
        on_batch: OnBatch | None = None,
    ) -> None:
        self.kind = kind
        self.batch_fn = batch_fn
        self.window = max(0.0, float(window))
        self.max_batch = max(1, int(max_batch))
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._queue: list[_Call[T]] = []
        self._leading = False  # a leader is waiting or running a batch

    def __call__(self, arg: T) -> np.ndarray:
        call: _Call[T] = _Call(arg)
        with self._lock:
            self._queue.append(call)
            if not self._leading:
                self._leading = call.lead = True
        if not call.lead:
            call.ready.wait()
            if not call.lead:  # another leader ran it
                return call.result()
        elif self.window > 0:  # a fresh round: give concurrent callers a moment to join
            time.sleep(self.window)
        self._run_batch()
        return call.result()

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        t0 = time.perf_counter()
        try:
            rows = self.batch_fn([c.arg for c in batch])
            if len(rows) != len(batch):
                raise RuntimeError(f"the encoder returned {len(rows)} rows for {len(batch)} {self.kind} queries")
        except BaseException as e:  # noqa: BLE001 - each waiting caller re-raises it
            for c in batch:
                c.error = e
        else:
            for c, row in zip(batch, rows):
                c.row = row
        seconds = time.perf_counter() - t0
        with self._lock:
            if self._queue:  # the oldest waiting call leads the next batch (the model is free now)
                nxt = self._queue[0]
                nxt.lead = True
                nxt.ready.set()
            else:
                self._leading = False
        for c in batch:
            c.ready.set()
        if self.on_batch is not None:
            try:
                self.on_batch(self.kind, len(batch), seconds)
            except Exception:  # noqa: BLE001 - metrics never fail a query
                pass


class BatchingEncoder:
    """An :class:`Encoder` whose single-query calls from concurrent threads share model calls."""

    def __init__(self, inner: Encoder, window_ms: float = 2.0, max_batch: int = 32, on_batch: OnBatch | None = None) -> None:
        self.inner = inner
        window = window_ms / 1000.0
        self._texts: Coalescer[str] = Coalescer("text", inner.embed_texts, window, max_batch, on_batch)
        self._images: Coalescer[Image.Image] = Coalescer("image", inner.embed_images, window, max_batch, on_batch)

    def embed_text(self, text: str) -> np.ndarray:
        return self._texts(text)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self._images(image)

    def embed_texts(self, texts: Sequence[str] | Any) -> np.ndarray:
        texts = list(texts)
        if len(texts) == 1:
            return self._texts(texts[0])[None, :]
        return self.inner.embed_texts(texts)  # already a batch (prompts, ingest): straight to the model

    def embed_images(self, images: Sequence[Image.Image] | Any) -> np.ndarray:
        images = list(images)
        if len(images) == 1:
            return self._images(images[0])[None, :]
        return self.inner.embed_images(images)

    def __getattr__(self, name: str) -> Any:
        # Everything else is the wrapped encoder's (only called for names not defined here).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"BatchingEncoder({self.inner!r})"


Encoder.register(BatchingEncoder)  # type: ignore[attr-defined] - isinstance(x, Encoder) holds for the wrapper


def wrapper(window_ms: float, max_batch: int = 32, on_batch: OnBatch | None = None) -> Callable[[Encoder], Encoder]:
    """What ``Engine.wrap_encoder`` takes: wraps each encoder the engine loads."""

    def wrap(enc: Encoder) -> Encoder:
        return BatchingEncoder(enc, window_ms, max_batch, on_batch)  # type: ignore[return-value]

    return wrap


def install(state: Any) -> None:
    """Batch the server's queries when the setting ``batch_window_ms`` is above 0: every encoder the
    engine loads from now on is wrapped; the ``encoder_batch`` event reports each model call (size,
    seconds). Off by default: see benchmarks/README.md, "Query batching"."""
    engine = state.engine
    if state.settings.batch_window_ms <= 0 or engine.wrap_encoder is not None:
        return  # off, or the embedding program chose its own wrapper

    def on_batch(kind: str, size: int, seconds: float) -> None:
        state.emit("encoder_batch", kind=kind, size=size, seconds=seconds)

    engine.wrap_encoder = wrapper(state.settings.batch_window_ms, MAX_BATCH, on_batch)
