"""The ingest pipeline: Source -> load (threads) -> encode (batches) -> store (atomic upserts).

Properties the rest of clipseek relies on:
- a bad item (corrupt file, unreadable path ...) is reported in the summary and skipped; the job goes on;
- records are written in atomic store upserts (every 256 items or 5 s, and once more on Ctrl-C or
  an encoder error), so a killed process loses at most the items since the last one, and a re-run
  skips every item whose fingerprint (size + mtime for files) is unchanged: it resumes;
- one rule says what is unchanged (:func:`is_unchanged`); with labels, unchanged items are
  relabelled from their stored vectors by a metadata-only store update, never re-encoded;
- decoding runs in a thread pool ahead of the encoder (PIL releases the GIL while decoding), so
  both cores stay busy. Memory is bounded by pixels: at most ``DECODE_PIXELS`` pixels are decoded at
  full size at once, and each image is reduced to the encoder's ``image_side`` as soon as it is
  decoded, so the prefetch window (at most ``WINDOW_PIXELS``) and the batch hold only small images.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from .encoders.base import Encoder
from .errors import BadImage, ClipseekError
from .failures import Failure, reason_of
from .images import SOURCE_SIZE, PixelBudget, load_image
from .stores.base import VectorStore
from .types import ImageRef, Record

#: Pixels decoded at full size at once across the loader threads (about 400 MB of RGBX); an image
#: larger than this (up to the loader's max_pixels) is decoded alone.
DECODE_PIXELS = 100_000_000

#: Pixels of decoded (reduced) images waiting in the prefetch window: 64 images of 448x448.
WINDOW_PIXELS = 64 * 448 * 448

Annotate = Callable[[np.ndarray], list[dict[str, Any]]]


@dataclass
class IngestReport:
    """What an index run did. ``failed`` lists a :class:`~clipseek.failures.Failure` (id, message,
    reason key, source) for every item that was skipped; ``duplicates`` the ids a manifest repeats
    (id, row numbers: the last row wins).

    ``counts`` are the live counters a progress display shows while the job runs: ``encoded``,
    ``unchanged``, ``failed``, and whatever a loader adds with :meth:`count` (``downloaded``)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[Failure] = field(default_factory=list)
    duplicates: list[tuple[str, list[int]]] = field(default_factory=list)
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, id: str, message: str, reason: str, source: str = "") -> None:
        """Record a skipped item (``reason``: a key of :data:`clipseek.failures.REASONS`)."""
        self.failed.append(Failure(id, message, reason, source))
        self.count("failed")

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def by_reason(self) -> dict[str, int]:
        """Failures per reason key, most frequent first."""
        counts = Counter(Failure(*f).reason for f in self.failed)
        return dict(counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": [Failure(*f).to_dict() for f in self.failed],
            "failed_by_reason": self.by_reason(),
            "duplicate_ids": [{"id": i, "rows": rows} for i, rows in self.duplicates],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.rate, 2),
        }

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        failed = f"{len(self.failed)} failed"
        if self.failed:
            failed += " (" + ", ".join(f"{k} {n}" for k, n in self.by_reason().items()) + ")"
        parts.append(failed)
        s = ", ".join(parts) + f" in {self.seconds:.1f}s"
        if self.embedded:
            s += f" ({self.rate:.1f} images/s)"
        return s


def with_file_fingerprint(ref: ImageRef) -> ImageRef:
    """A file ref without a fingerprint gets one from its size and mtime (so re-runs skip it)."""
    if ref.fingerprint is not None or ref.path is None:
        return ref
    try:
        st = ref.path.stat()
    except OSError:
        return ref  # the loader reports the problem
    return dataclasses.replace(ref, fingerprint=f"{st.st_size}:{st.st_mtime_ns}")


def is_unchanged(ref: ImageRef, known: dict[str, str]) -> bool:
    """The one rule for skipping an item: it is stored with the same, non-empty fingerprint.

    ``ref`` must already carry its fingerprint (see :func:`with_file_fingerprint`)."""
    return ref.fingerprint is not None and known.get(ref.id) == ref.fingerprint


class IngestJob:
    """One index run over a stream of refs; :meth:`run` does it and returns the report."""

    def __init__(
        self,
        encoder: Encoder,
        store: VectorStore,
        *,
        known: dict[str, str] | None = None,
        annotate: Annotate | None = None,
        batch_size: int | None = None,
        workers: int = 2,
        on_progress: Callable[[int], None] | None = None,
        report: IngestReport | None = None,
        commit_every: int = 256,
        commit_seconds: float = 5.0,
        relabel_chunk: int = 512,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.known = known or {}
        self.annotate = annotate
        self.batch_size = batch_size or encoder.batch_size
        self.workers = max(1, workers)
        self.on_progress = on_progress
        self.report = report or IngestReport()
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.relabel_chunk = relabel_chunk
        self._budget = PixelBudget(DECODE_PIXELS)
        self._batch: list[tuple[ImageRef, Image.Image]] = []
        self._pending: list[tuple[Record, bool]] = []  # (record, is new) encoded but not yet stored
        self._unchanged: list[str] = []  # ids to relabel, when labelling
        self._last_commit = time.monotonic()
        self._store_failed = False

    def run(self, refs: Iterable[ImageRef]) -> IngestReport:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clipseek-load") as pool:
            try:
                for ref, fut in self._prefetch(pool, self._changed(refs), depth=max(2 * self.batch_size, 8)):
                    img = self._result(ref, fut)
                    if img is None:
                        continue
                    self._batch.append((ref, img))
                    if len(self._batch) >= self.batch_size:
                        self._encode_batch()
                self._encode_batch()
            finally:
                # Also on Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt) or an encoder
                # failure: keep what is already encoded (complete records), so the next run resumes
                # after it. A failing store write is not retried here.
                if not self._store_failed:
                    self._commit()
        self._relabel_unchanged()
        self.store.flush()
        self.report.seconds += time.perf_counter() - t0
        return self.report

    def _progress(self, n: int) -> None:
        if self.on_progress:
            self.on_progress(n)

    def _changed(self, refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
        """The refs to encode; unchanged ones are counted (and remembered for relabelling)."""
        for ref in refs:
            ref = with_file_fingerprint(ref)
            if is_unchanged(ref, self.known):
                self.report.unchanged += 1
                self.report.count("unchanged")
                if self.annotate is not None:
                    self._unchanged.append(ref.id)
                self._progress(1)
                continue
            yield ref

    def _load(self, ref: ImageRef) -> Image.Image:
        source = ref.path if ref.path is not None else ref.data
        if source is None:
            raise BadImage(f"{ref.id}: URL sources are not supported yet")
        return load_image(source, name=ref.id, fit=self.encoder.image_side, budget=self._budget)

    def _prefetch(
        self, pool: ThreadPoolExecutor, refs: Iterable[ImageRef], depth: int
    ) -> Iterator[tuple[ImageRef, Future[Image.Image]]]:
        """Decode ahead of the encoder: at most ``depth`` items, and the decoded images waiting
        in the window at most ``WINDOW_PIXELS`` pixels (wide panoramas stay big after reduction)."""
        window: deque[tuple[ImageRef, Future[Image.Image]]] = deque()
        for ref in refs:
            window.append((ref, pool.submit(self._load, ref)))
            while window and (len(window) >= depth or _held_pixels(window) >= WINDOW_PIXELS):
                yield window.popleft()
        while window:
            yield window.popleft()

    def _result(self, ref: ImageRef, fut: Future[Image.Image]) -> Image.Image | None:
        """The decoded image, or None after recording why the item is skipped."""
        where = str(ref.path or ref.url or ref.metadata.get("shard") or "")
        try:
            return fut.result()
        except ClipseekError as e:
            self.report.fail(ref.id, str(e).removeprefix(f"{ref.id}: "), reason_of(e), where)
        except Exception as e:  # noqa: BLE001 - one odd file must not stop a million-image job
            self.report.fail(ref.id, f"unexpected error: {type(e).__name__}: {e}", "other", where)
        self._progress(1)
        return None

    def _encode_batch(self) -> None:
        """Encode the batch into pending records; commit when enough are pending or time is up."""
        if not self._batch:
            return
        vecs = self.encoder.embed_images([img for _, img in self._batch])
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        extra = self.annotate(vecs) if self.annotate is not None else [{} for _ in self._batch]
        for (ref, img), v, more in zip(self._batch, vecs, extra):
            meta = dict(ref.metadata)
            meta.update(more)
            # The size of the file's picture: the loader may have reduced the image.
            width, height = img.info.get(SOURCE_SIZE, img.size)
            meta.setdefault("width", width)
            meta.setdefault("height", height)
            meta["indexed_at"] = now
            if ref.fingerprint is not None:
                meta["_fingerprint"] = ref.fingerprint
            self._pending.append((Record(ref.id, v, meta), ref.id not in self.known))
        self.report.count("encoded", len(self._batch))
        self._progress(len(self._batch))
        self._batch.clear()
        if len(self._pending) >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_seconds:
            self._commit()

    def _commit(self) -> None:
        """Write the pending records in one store transaction.

        One transaction (and fsync) per commit, not per encoder batch: small encoder batches would
        otherwise spend a large share of the time syncing the disk."""
        if self._pending:
            try:
                self.store.upsert([rec for rec, _ in self._pending])
            except BaseException:
                self._store_failed = True
                raise
            added = sum(1 for _, is_new in self._pending if is_new)
            self.report.added += added
            self.report.updated += len(self._pending) - added
            self._pending.clear()
        self._last_commit = time.monotonic()

    def _relabel_unchanged(self) -> None:
        """Label the unchanged items from their stored vectors: a metadata-only store update."""
        if self.annotate is None:
            return
        ids = self._unchanged
        for i in range(0, len(ids), self.relabel_chunk):
            recs = [r for r in self.store.get(ids[i : i + self.relabel_chunk]) if r is not None]
            if recs:
                extra = self.annotate(np.stack([r.vector for r in recs]))
                self.store.update_metadata({r.id: e for r, e in zip(recs, extra)})


def _held_pixels(window: Iterable[tuple[ImageRef, Future[Image.Image]]]) -> int:
    total = 0
    for _, fut in window:
        if fut.done() and fut.exception() is None:
            img = fut.result()
            total += img.width * img.height
    return total


def ingest(refs: Iterable[ImageRef], encoder: Encoder, store: VectorStore, **options: Any) -> IngestReport:
    """Embed and store every ref that is not unchanged (see :class:`IngestJob` for the options).

    ``known`` maps id -> stored fingerprint; ``annotate`` maps a batch of vectors to extra metadata
    per item (e.g. zero-shot labels), applied to new items and, from their stored vectors, to
    unchanged ones. Records are written in one store transaction per ``commit_every`` items or
    ``commit_seconds``, whichever comes first: a crash loses at most that much work.
    """
    return IngestJob(encoder, store, **options).run(refs)
