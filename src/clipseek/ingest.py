"""The ingest pipeline: Source -> load (threads) -> encode (batches) -> store (atomic upserts).

Properties the rest of clipseek relies on:
- a bad item (corrupt file, unreadable path ...) is reported in the summary and skipped; the job goes on;
- records are written in atomic store upserts (every 256 items or 5 s, and once more on Ctrl-C or
  an encoder error), so a killed process loses at most the items since the last one, and a re-run
  skips every item whose fingerprint (size + mtime for files) is unchanged: it resumes;
- decoding runs in a thread pool ahead of the encoder (PIL releases the GIL while decoding), so
  both cores stay busy; at most ``prefetch`` decoded images are held in memory.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from .encoders.base import Encoder
from .errors import BadImage, ClipseekError
from .images import SOURCE_SIZE, load_image
from .stores.base import VectorStore
from .types import ImageRef, Record


@dataclass
class IngestReport:
    """What an index run did. ``failed`` lists (id, reason) for every item that was skipped."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": [{"id": i, "reason": r} for i, r in self.failed],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.rate, 2),
        }

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        parts.append(f"{len(self.failed)} failed")
        s = ", ".join(parts) + f" in {self.seconds:.1f}s"
        if self.embedded:
            s += f" ({self.rate:.1f} images/s)"
        return s


def with_file_fingerprint(ref: ImageRef) -> ImageRef:
    """A file ref without a fingerprint gets one from its size and mtime (so re-runs skip it)."""
    try:
        st = ref.path.stat()  # type: ignore[union-attr]
    except OSError:
        return ref  # the loader reports the problem
    return dataclasses.replace(ref, fingerprint=f"{st.st_size}:{st.st_mtime_ns}")


def _load(ref: ImageRef) -> Image.Image:
    if ref.path is not None:
        return load_image(ref.path, name=ref.id)
    if ref.data is not None:
        return load_image(ref.data, name=ref.id)
    raise BadImage(f"{ref.id}: URL sources are not supported yet")


def _prefetch(
    pool: ThreadPoolExecutor, refs: Iterable[ImageRef], depth: int
) -> Iterator[tuple[ImageRef, "Future[Image.Image]"]]:
    window: deque[tuple[ImageRef, Future[Image.Image]]] = deque()
    for ref in refs:
        window.append((ref, pool.submit(_load, ref)))
        if len(window) >= depth:
            yield window.popleft()
    while window:
        yield window.popleft()


def ingest(
    refs: Iterable[ImageRef],
    encoder: Encoder,
    store: VectorStore,
    *,
    batch_size: int | None = None,
    workers: int = 2,
    known: dict[str, str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    report: IngestReport | None = None,
    annotate: Callable[[np.ndarray], list[dict[str, Any]]] | None = None,
    commit_every: int = 256,
    commit_seconds: float = 5.0,
) -> IngestReport:
    """Embed and store every ref whose fingerprint differs from ``known`` (id -> fingerprint).

    ``annotate`` (optional) maps a batch of vectors to extra metadata per item, e.g. zero-shot labels.
    Records are written in one store transaction per ``commit_every`` items or ``commit_seconds``,
    whichever comes first: a crash loses at most that much work, which the next run redoes.
    """
    report = report or IngestReport()
    known = known or {}
    bs = batch_size or encoder.batch_size
    t0 = time.perf_counter()

    def todo() -> Iterator[ImageRef]:
        for ref in refs:
            if ref.fingerprint is None and ref.path is not None:
                ref = with_file_fingerprint(ref)
            old = known.get(ref.id)
            if old is not None and ref.fingerprint is not None and old == ref.fingerprint:
                report.unchanged += 1
                if on_progress:
                    on_progress(1)
                continue
            yield ref

    batch: list[tuple[ImageRef, Image.Image]] = []
    pending: list[Record] = []
    pending_new: list[bool] = []
    last_commit = time.monotonic()
    store_failed = False

    def commit() -> None:
        # One store transaction (and fsync) per commit, not per encoder batch: small encoder
        # batches would otherwise spend a large share of the time syncing the disk.
        nonlocal last_commit, store_failed
        if pending:
            try:
                store.upsert(pending)
            except BaseException:
                store_failed = True
                raise
            for is_new in pending_new:
                if is_new:
                    report.added += 1
                else:
                    report.updated += 1
            pending.clear()
            pending_new.clear()
        last_commit = time.monotonic()

    def flush() -> None:
        if not batch:
            return
        vecs = encoder.embed_images([img for _, img in batch])
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        extra = annotate(vecs) if annotate is not None else [{} for _ in batch]
        for (ref, img), v, more in zip(batch, vecs, extra):
            meta = dict(ref.metadata)
            meta.update(more)
            # The size of the file's picture: the loader may have reduced the image.
            width, height = img.info.get(SOURCE_SIZE, img.size)
            meta.setdefault("width", width)
            meta.setdefault("height", height)
            meta["indexed_at"] = now
            if ref.fingerprint is not None:
                meta["_fingerprint"] = ref.fingerprint
            pending.append(Record(ref.id, v, meta))
            pending_new.append(ref.id not in known)
        if on_progress:
            on_progress(len(batch))
        batch.clear()
        if len(pending) >= commit_every or time.monotonic() - last_commit >= commit_seconds:
            commit()

    def run(pool: ThreadPoolExecutor) -> None:
        for ref, fut in _prefetch(pool, todo(), depth=max(2 * bs, 8)):
            try:
                img = fut.result()
            except ClipseekError as e:
                report.failed.append((ref.id, str(e).removeprefix(f"{ref.id}: ")))
                if on_progress:
                    on_progress(1)
                continue
            except Exception as e:  # noqa: BLE001 - one odd file must not stop a million-image job
                report.failed.append((ref.id, f"unexpected error: {type(e).__name__}: {e}"))
                if on_progress:
                    on_progress(1)
                continue
            batch.append((ref, img))
            if len(batch) >= bs:
                flush()
        flush()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clipseek-load") as pool:
        try:
            run(pool)
        finally:
            # Also on Ctrl-C or an encoder failure: keep what is already encoded (complete records),
            # so the next run resumes after it. A failing store write is not retried here.
            if pending and not store_failed:
                commit()
    store.flush()
    report.seconds += time.perf_counter() - t0
    return report
