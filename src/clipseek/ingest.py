"""The ingest pipeline: Source -> load (threads) -> encode (batches) -> store (atomic upserts).

Properties the rest of clipseek relies on:
- a bad item (corrupt file, unreadable path ...) is reported in the summary and skipped; the job goes on;
- records are written in atomic store upserts (every 256 items or 5 s, and once more on Ctrl-C or
  an encoder error), so a killed process loses at most the items since the last one, and a re-run
  skips every item whose fingerprint (size + mtime for files) is unchanged: it resumes;
- one rule says what is unchanged (:func:`is_unchanged`); with labels, unchanged items are
  relabelled from their stored vectors by a metadata-only store update, never re-encoded;
- every item that is read gets a content hash (sha256 of its bytes, metadata ``_sha256``) from the
  same bytes the decoder reads (one read per file), and only items that are new or changed by
  fingerprint are read. An item whose bytes are already stored (a moved or renamed file, a file
  touched but not changed, an exact duplicate) takes the stored vector instead of being encoded;
  with ``dedup="skip"`` an exact duplicate gets no record of its own: its path is listed in the
  ``duplicates`` metadata of the record that holds those bytes (having no record, hence no stored
  fingerprint, it is read and hashed again on every run, which keeps the listing true);
- decoding, and the encoder's own preprocessing (:meth:`Encoder.prepare`: resize, crop, normalise),
  run in a thread pool ahead of the encoder (PIL and numpy release the GIL), so both cores stay busy
  and the encoding thread only runs the model. Memory is bounded by pixels: at most ``DECODE_PIXELS`` pixels are decoded at
  full size at once, and each image is reduced to the encoder's ``image_side`` as soon as it is
  decoded, so the prefetch window (at most ``WINDOW_PIXELS``) and the batch hold only small images;
- URL items are downloaded ahead of decoding by a :class:`~clipseek.downloads.DownloadStage`
  (bounded concurrency, into a content-addressed cache on disk; see downloads.py), and decoded from
  the cached file. A URL item's fingerprint is its URL, so a re-run skips it without a download.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from PIL import Image

from .downloads import DownloadStage, url_fingerprint
from .encoders.base import Encoder
from .errors import BadImage, ClipseekError
from .failures import Failure, reason_of
from .images import SOURCE_SIZE, PixelBudget
from .paths import default_data_dir
from .stores.base import VectorStore
from .types import ImageRef, Record

#: Pixels decoded at full size at once across the loader threads (about 400 MB of RGBX); an image
#: larger than this (up to the loader's max_pixels) is decoded alone.
DECODE_PIXELS = 100_000_000

#: Pixels of decoded (reduced) images waiting in the prefetch window: 64 images of 448x448.
WINDOW_PIXELS = 64 * 448 * 448

#: Files up to this size are read into memory once, hashed and decoded from those bytes; larger
#: ones (rare: huge TIFFs) are hashed while streaming and decoded from the file.
READ_WHOLE_BYTES = 64 * 1024 * 1024

Annotate = Callable[[np.ndarray], list[dict[str, Any]]]
Dedup = Literal["keep", "skip"]
DEDUP_MODES: tuple[Dedup, ...] = ("keep", "skip")

#: Metadata key of the content hash (sha256 hex of the item's bytes): bookkeeping, hidden from users.
HASH_KEY = "_sha256"
#: Metadata key listing the other paths of an exact duplicate kept once (``dedup="skip"``).
DUPLICATES_KEY = "duplicates"


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
    reused: int = 0  # of added + updated: vectors taken from stored records with the same bytes
    duplicates: int = 0  # exact duplicates listed on another record instead of indexed (dedup="skip")
    pruned: int = 0  # records deleted because their file is gone (prune)
    failed: list[Failure] = field(default_factory=list)
    repeated_ids: list[tuple[str, list[int]]] = field(default_factory=list)  # an id on several manifest rows
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
            "reused": self.reused,
            "duplicates": self.duplicates,
            "pruned": self.pruned,
            "failed": [Failure(*f).to_dict() for f in self.failed],
            "failed_by_reason": self.by_reason(),
            "duplicate_ids": [{"id": i, "rows": rows} for i, rows in self.repeated_ids],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.rate, 2),
        }

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        failed = f"{len(self.failed)} failed"
        if self.failed:
            failed += " (" + ", ".join(f"{k} {n}" for k, n in self.by_reason().items()) + ")"
        parts.append(failed)
        if self.reused:
            parts.append(f"{self.reused} vectors reused")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates listed")
        if self.pruned:
            parts.append(f"{self.pruned} pruned")
        s = ", ".join(parts) + f" in {self.seconds:.1f}s"
        if self.embedded:
            s += f" ({self.rate:.1f} images/s)"
        return s


def with_file_fingerprint(ref: ImageRef) -> ImageRef:
    """A file ref without a fingerprint gets one from its size and mtime, a URL ref its URL (so
    re-runs skip them)."""
    if ref.fingerprint is None and ref.url is not None:
        return dataclasses.replace(ref, fingerprint=url_fingerprint(ref.url))
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


class CommitWindow:
    """Encoded records waiting for the next atomic store ``upsert``: written every ``every`` records
    or ``seconds``, and once more when a run stops (also on Ctrl-C), by every pipeline (threads, Ray).

    One transaction (and fsync) per commit, not per encoder batch: small encoder batches would
    otherwise spend a large share of the time syncing the disk. A failed upsert marks the window
    ``failed``; it is not retried on the way out."""

    def __init__(
        self, store: VectorStore, report: IngestReport, downloads: DownloadStage, every: int = 256, seconds: float = 5.0
    ) -> None:
        self.store, self.report, self.downloads = store, report, downloads
        self.every, self.seconds = every, seconds
        self.pending: list[tuple[Record, bool]] = []  # (record, is new), encoded but not yet stored
        self.failed = False
        self._last = time.monotonic()

    def add(self, record: Record, is_new: bool) -> None:
        self.pending.append((record, is_new))

    def due(self) -> bool:
        return len(self.pending) >= self.every or time.monotonic() - self._last >= self.seconds

    def commit(self) -> list[Record]:
        """Upsert the pending records in one transaction; count them as added or updated and
        release their downloads. Returns the records written."""
        self._last = time.monotonic()
        if not self.pending or self.failed:
            return []
        recs = [rec for rec, _ in self.pending]
        try:
            self.store.upsert(recs)
        except BaseException:
            self.failed = True
            raise
        self.downloads.release(rec.id for rec in recs)
        added = sum(1 for _, is_new in self.pending if is_new)
        self.report.added += added
        self.report.updated += len(recs) - added
        self.pending.clear()
        return recs


def changed_refs(
    refs: Iterable[ImageRef],
    known: dict[str, str],
    report: IngestReport,
    progress: Callable[[int], None],
    on_unchanged: Callable[[str], None] | None = None,
) -> Iterator[ImageRef]:
    """The refs to encode (fingerprinted); unchanged ones are counted in ``report`` and passed to
    ``on_unchanged`` (their ids), the one rule every pipeline (threads, Ray) skips by."""
    for ref in refs:
        ref = with_file_fingerprint(ref)
        if is_unchanged(ref, known):
            report.unchanged += 1
            report.count("unchanged")
            if on_unchanged is not None:
                on_unchanged(ref.id)
            progress(1)
            continue
        yield ref


class ContentBook:
    """What a run knows about content hashes, shared by the thread and Ray pipelines: which stored
    record or earlier item of this run holds an item's bytes (its vector is reused), and with
    ``dedup="skip"`` which exact duplicates are listed on which record. It commits the run's
    :class:`CommitWindow`, adding to each record the ``duplicates`` found for it.

    Both pipelines take their items in source order and ask, per item that loaded: is it a listed
    duplicate (:meth:`listed_as_duplicate`); if not, is there a vector for its bytes
    (:meth:`known_vector`); then :meth:`keep` it (its record goes into the window)."""

    def __init__(
        self,
        store: VectorStore,
        window: CommitWindow,
        hashes: dict[str, str] | None,
        dedup: Dedup,
        progress: Callable[[int], None],
    ) -> None:
        if dedup not in DEDUP_MODES:
            raise ClipseekError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {dedup!r}")
        self.store, self.window, self.dedup = store, window, dedup
        self.report = window.report
        self._progress = progress
        # sha256 -> a committed id with those bytes. It may be stale (that record re-encoded since),
        # so a use checks the record's own hash (:meth:`stored_with`).
        self.by_hash: dict[str, str] = {}
        for rid, h in (hashes or {}).items():
            self.by_hash.setdefault(str(h), rid)
        self._open_owner: dict[str, str] = {}  # sha256 -> id of an item of this run not yet committed
        self._pending_vec: dict[str, np.ndarray] = {}  # sha256 -> vector of a pending record
        self._dups: dict[str, list[str]] = {}  # owner id -> duplicate paths found (dedup="skip")

    def listed_as_duplicate(self, ref: ImageRef, sha256: str | None) -> bool:
        """With ``dedup="skip"``: when another item of this run, or a stored record whose file is
        still there, has these bytes, list this item's path on it instead of indexing it."""
        if self.dedup != "skip" or sha256 is None:
            return False
        owner = self._open_owner.get(sha256)
        if owner is None:
            rec = self.stored_with(sha256)
            # A stored owner whose file is gone is a moved file: this item takes over its vector.
            if rec is not None and _still_there(rec):
                owner = rec.id
        if owner is None or owner == ref.id:
            return False
        self._dups.setdefault(owner, []).append(str(ref.metadata.get("path") or ref.id))
        self.report.duplicates += 1
        self._progress(1)
        return True

    def own(self, ref: ImageRef, sha256: str | None) -> None:
        """An item of this run that gets a record: the owner of its bytes until it is committed."""
        if sha256 is not None:
            self._open_owner.setdefault(sha256, ref.id)

    def stored_with(self, sha256: str) -> Record | None:
        """A committed record whose bytes hash to ``sha256``, if the store has one."""
        rid = self.by_hash.get(sha256)
        if rid is None:
            return None
        rec = self.store.get([rid])[0]
        if rec is None or rec.metadata.get(HASH_KEY) != sha256:
            return None  # deleted or re-encoded with other bytes since
        return rec

    def known_vector(self, sha256: str | None) -> np.ndarray | None:
        """The vector of a pending or stored record with these bytes, if any."""
        if sha256 is None:
            return None
        vec = self._pending_vec.get(sha256)
        if vec is None:
            rec = self.stored_with(sha256)
            vec = None if rec is None else np.asarray(rec.vector)
        return vec

    def keep(self, record: Record, is_new: bool) -> None:
        """Put an item's record in the window; its vector is the one for its bytes from now on."""
        h = record.metadata.get(HASH_KEY)
        if h is not None:
            self._pending_vec.setdefault(str(h), record.vector)
        self.window.add(record, is_new)

    def commit(self) -> None:
        """Commit the window, with the duplicates found for its records (``dedup="skip"``)."""
        for rec, _ in self.window.pending:
            paths = self._dups.pop(rec.id, None)
            if paths:
                rec.metadata[DUPLICATES_KEY] = sorted(set(paths))
        if self.window.failed:
            return
        committed = self.window.commit()
        if committed:
            for rec in committed:
                h = rec.metadata.get(HASH_KEY)
                if h is not None:
                    self.by_hash[h] = rec.id
            self._pending_vec.clear()
            self._open_owner.clear()  # the batch is empty here, but after an interruption
        self._list_duplicates()

    def _list_duplicates(self) -> None:
        """Add the duplicates found for stored records to their ``duplicates`` (metadata only)."""
        if not self._dups:
            return
        owners = list(self._dups)
        updates = {}
        for rec in self.store.get(owners):
            if rec is not None:
                listed = rec.metadata.get(DUPLICATES_KEY) or []
                merged = sorted(set(listed) | set(self._dups[rec.id]))
                if merged != listed:
                    updates[rec.id] = {DUPLICATES_KEY: merged}
        if updates:
            self.store.update_metadata(updates)
        self._dups.clear()


@dataclass
class _Item:
    """A loaded item on its way to the store: the encoder's input made from its decoded image
    (:meth:`Encoder.prepare`), the picture's size in the file, the pixels the loader held for it,
    and the sha256 of its bytes."""

    ref: ImageRef
    prepared: Any
    size: tuple[int, int]
    pixels: int
    sha256: str | None


class IngestJob:
    """One index run over a stream of refs; :meth:`run` does it and returns the report.

    ``hashes`` maps stored ids to their content hash (``_sha256``), so that an item whose bytes are
    already stored reuses that record's vector; ``dedup`` says what an exact duplicate of a stored
    or earlier item becomes: its own record (``"keep"``) or a path in that record's ``duplicates``
    (``"skip"``)."""

    def __init__(
        self,
        encoder: Encoder,
        store: VectorStore,
        *,
        known: dict[str, str] | None = None,
        hashes: dict[str, str] | None = None,
        dedup: Dedup = "keep",
        annotate: Annotate | None = None,
        batch_size: int | None = None,
        workers: int = 2,
        on_progress: Callable[[int], None] | None = None,
        report: IngestReport | None = None,
        commit_every: int = 256,
        commit_seconds: float = 5.0,
        relabel_chunk: int = 512,
        downloads: DownloadStage | None = None,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.known = known or {}
        self.annotate = annotate
        self.batch_size = batch_size or encoder.batch_size
        self.workers = max(1, workers)
        self.on_progress = on_progress
        self.report = report or IngestReport()
        self.relabel_chunk = relabel_chunk
        # URL items: downloaded into the collection's cache (the engine passes it), else $CLIPSEEK_HOME's.
        self.downloads = downloads or DownloadStage(default_data_dir() / "downloads")
        self._window = CommitWindow(store, self.report, self.downloads, commit_every, commit_seconds)
        self._budget = PixelBudget(DECODE_PIXELS)
        self._batch: list[_Item] = []
        self._unchanged: list[str] = []  # ids to relabel, when labelling
        self._book = ContentBook(store, self._window, hashes, dedup, self._progress)

    def run(self, refs: Iterable[ImageRef]) -> IngestReport:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clipseek-load") as pool:
            try:
                loadable = self._downloaded(self._changed(refs))
                for ref, fut in self._prefetch(pool, loadable, depth=max(2 * self.batch_size, 8)):
                    item = self._result(ref, fut)
                    if item is None or self._book.listed_as_duplicate(item.ref, item.sha256):
                        continue
                    self._batch.append(item)
                    self._book.own(ref, item.sha256)
                    if len(self._batch) >= self.batch_size:
                        self._encode_batch()
                self._encode_batch()
            finally:
                # Also on Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt) or an encoder
                # failure: keep what is already encoded (complete records), so the next run resumes
                # after it. A failing store write is not retried here.
                self._book.commit()
        self._relabel_unchanged()
        self.store.flush()
        self.report.seconds += time.perf_counter() - t0
        return self.report

    def _progress(self, n: int) -> None:
        if self.on_progress:
            self.on_progress(n)

    def _changed(self, refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
        """The refs to encode; unchanged ones are counted (and remembered for relabelling)."""
        remember = self._unchanged.append if self.annotate is not None else None
        return changed_refs(refs, self.known, self.report, self._progress, remember)

    def _downloaded(self, refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
        """The download stage: URL refs come out as refs to their cached files, in the order their
        downloads finish; a failed download goes to the report (its reason key on the error)."""
        for ref, error in self.downloads.run(refs):
            if error is None:
                yield ref
            else:
                self._fail(ref, error)

    def _load(self, ref: ImageRef) -> _Item:
        """Decode the item, hash its bytes (reading a file once, see ``READ_WHOLE_BYTES``) and
        prepare the encoder's input, all on a loader thread."""
        load = functools.partial(self.encoder.load_image, budget=self._budget)
        if ref.path is not None:
            data = _read_small(ref.path)
            if data is None:  # unreadable, empty or huge: load_image names the problem, or streams
                img = load(ref.path, name=ref.id)
                return self._prepared(ref, img, _hash_file(ref.path))
            return self._prepared(ref, load(data, name=ref.id), hashlib.sha256(data).hexdigest())
        if ref.data is None:
            raise BadImage(f"{ref.id}: no path or data to read (a URL item must pass the download stage)")
        img = load(ref.data, name=ref.id)
        return self._prepared(ref, img, hashlib.sha256(ref.data).hexdigest())

    def _prepared(self, ref: ImageRef, img: Image.Image, sha256: str) -> _Item:
        # Resizing and normalising here, on the loader threads, keeps them off the encoding thread,
        # where they would run between model calls and leave the model's second core idle.
        size = img.info.get(SOURCE_SIZE, img.size)  # the loader may have reduced the image
        return _Item(ref, self.encoder.prepare(img), size, img.width * img.height, sha256)

    def _prefetch(
        self, pool: ThreadPoolExecutor, refs: Iterable[ImageRef], depth: int
    ) -> Iterator[tuple[ImageRef, Future[_Item]]]:
        """Decode ahead of the encoder: at most ``depth`` items, and the decoded images waiting
        in the window at most ``WINDOW_PIXELS`` pixels (wide panoramas stay big after reduction)."""
        window: deque[tuple[ImageRef, Future[_Item]]] = deque()
        for ref in refs:
            window.append((ref, pool.submit(self._load, ref)))
            while window and (len(window) >= depth or _held_pixels(window) >= WINDOW_PIXELS):
                yield window.popleft()
        while window:
            yield window.popleft()

    def _result(self, ref: ImageRef, fut: Future[_Item]) -> _Item | None:
        """The loaded item, or None after recording why it is skipped."""
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - one odd file must not stop a million-image job
            self._fail(ref, e)
        return None

    def _vectors(self) -> np.ndarray:
        """One vector per batch item: the stored one for bytes already embedded, else encoded
        (equal bytes inside the batch are encoded once)."""
        vecs: list[np.ndarray | None] = [self._book.known_vector(it.sha256) for it in self._batch]
        todo: dict[str | int, list[int]] = {}
        for i, (it, v) in enumerate(zip(self._batch, vecs)):
            if v is None:
                todo.setdefault(it.sha256 if it.sha256 is not None else i, []).append(i)
        self.report.reused += len(self._batch) - len(todo)
        if todo:
            encoded = self.encoder.embed_prepared([self._batch[idx[0]].prepared for idx in todo.values()])
            for idx, v in zip(todo.values(), encoded):
                for i in idx:
                    vecs[i] = v
        return np.stack([v for v in vecs if v is not None])

    def _fail(self, ref: ImageRef, e: Exception) -> None:
        """Record why an item is skipped (its reason key from the error), and go on."""
        where = str(ref.url or ref.path or ref.metadata.get("shard") or "")
        if isinstance(e, ClipseekError):
            self.report.fail(ref.id, str(e).removeprefix(f"{ref.id}: "), reason_of(e), where)
        else:
            self.report.fail(ref.id, f"unexpected error: {type(e).__name__}: {e}", "other", where)
        self.downloads.release([ref.id])
        self._progress(1)

    def _encode_batch(self) -> None:
        """Encode the batch into pending records; commit when enough are pending or time is up."""
        if not self._batch:
            return
        vecs = self._vectors()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        extra = self.annotate(vecs) if self.annotate is not None else [{} for _ in self._batch]
        for it, v, more in zip(self._batch, vecs, extra):
            ref = it.ref
            meta = dict(ref.metadata)
            meta.update(more)
            width, height = it.size
            meta.setdefault("width", width)
            meta.setdefault("height", height)
            meta["indexed_at"] = now
            if ref.fingerprint is not None:
                meta["_fingerprint"] = ref.fingerprint
            if it.sha256 is not None:
                meta[HASH_KEY] = it.sha256
            self._book.keep(Record(ref.id, v, meta), ref.id not in self.known)
        self.report.count("encoded", len(self._batch))
        self._progress(len(self._batch))
        self._batch.clear()
        if self._window.due():
            self._book.commit()

    def _relabel_unchanged(self) -> None:
        if self.annotate is not None:
            relabel(self.store, self._unchanged, self.annotate, self.relabel_chunk)


def relabel(
    store: VectorStore, ids: Sequence[str], annotate: Callable[[np.ndarray], list[dict[str, Any]]], chunk: int = 1024
) -> None:
    """Label unchanged items from their stored vectors: a metadata-only store update (the thread
    and Ray pipelines both end with it when labelling)."""
    for i in range(0, len(ids), chunk):
        recs = [r for r in store.get(ids[i : i + chunk]) if r is not None]
        if recs:
            extra = annotate(np.stack([r.vector for r in recs]))
            store.update_metadata({r.id: e for r, e in zip(recs, extra)})


def _held_pixels(window: Iterable[tuple[ImageRef, Future[_Item]]]) -> int:
    total = 0
    for _, fut in window:
        if fut.done() and fut.exception() is None:
            total += fut.result().pixels
    return total


def _read_small(path: Path) -> bytes | None:
    """The file's bytes when it can be read whole (see ``READ_WHOLE_BYTES``), else None."""
    try:
        if path.stat().st_size > READ_WHOLE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data or None


def _hash_file(path: Path) -> str:
    with path.open("rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


def _still_there(rec: Record) -> bool:
    """Whether a stored record's file still exists (records without a path always count)."""
    path = rec.metadata.get("path")
    return not path or Path(str(path)).exists()


def prune(store: VectorStore, root: Path, listed: Iterable[str]) -> int:
    """Delete the records whose file (metadata ``path``) is inside ``root`` but gone: not among the
    ``listed`` ids of this run and no longer on disk. Returns how many were deleted."""
    inside = str(root).rstrip(os.sep) + os.sep
    seen = set(listed)
    gone = [
        rid
        for rid, path in store.values("path").items()
        if rid not in seen and isinstance(path, str) and path.startswith(inside) and not os.path.lexists(path)
    ]
    return store.delete(gone) if gone else 0


def ingest(refs: Iterable[ImageRef], encoder: Encoder, store: VectorStore, **options: Any) -> IngestReport:
    """Embed and store every ref that is not unchanged (see :class:`IngestJob` for the options).

    ``known`` maps id -> stored fingerprint; ``hashes`` id -> stored content hash; ``annotate`` maps a batch of vectors to extra metadata
    per item (e.g. zero-shot labels), applied to new items and, from their stored vectors, to
    unchanged ones. Records are written in one store transaction per ``commit_every`` items or
    ``commit_seconds``, whichever comes first: a crash loses at most that much work.
    """
    return IngestJob(encoder, store, **options).run(refs)
