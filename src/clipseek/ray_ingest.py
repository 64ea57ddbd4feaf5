"""Ingest on a Ray cluster (``clipseek index ... --ray [ADDRESS]``, ``Collection.index(ray=...)``).

The same pipeline as :mod:`clipseek.ingest`, with loading and encoding spread over Ray workers:

- the driver lists the source, skips unchanged items with the same rule (:func:`~clipseek.ingest.changed_refs`),
  downloads URL items with the same :class:`~clipseek.downloads.DownloadStage`, and hands the refs
  (picklable dataclasses) to Ray Data in chunks of ``CHUNK``, so a source of any size streams;
- each worker is a Ray Data actor holding one encoder, built from the collection's encoder name
  (``get_registry().make_encoder``) and checked against it: it reads an item's bytes once, hashes
  them (``_sha256``), decodes with :func:`~clipseek.images.load_image` reduced to the encoder's
  ``image_side``, and encodes the batch. Decoding stays in the actor that encodes, so no decoded
  pixels cross the object store; a bad item comes back as a row with its reason key;
- only the driver writes the store (one writer per collection), with the store's atomic ``upsert``
  every ``commit_every`` records, and once more on an interruption: crash safety and resume are
  those of the plain pipeline, and the records (ids, vectors, metadata) are the same.

Zero-shot labels are computed on the driver from the vectors the workers return (one prompt
matrix, embedded once), and unchanged items are relabelled from their stored vectors, as in the
plain run.

Content hashes follow the plain run's rules (:class:`~clipseek.ingest.ContentBook`, the same
object, fed in source order by the driver): an item whose bytes are already stored (a moved or
renamed file, a touched one) takes the stored vector, and with ``dedup="skip"`` an exact duplicate
is listed in its owner's ``duplicates`` instead of getting a record. The workers only know the
bytes, so each actor gets the stored hashes as sorted 64-bit prefixes (:func:`hash_prefixes`,
8 bytes per stored record, put once in Ray's object store and shared read-only by the actors of a
node): an item whose prefix is stored is read, hashed and decoded (its width and height) but not
encoded, and the driver takes the vector by full hash. When no stored record has those bytes after
all (another hash with the same prefix: a chance of records / 2**64 per item, 5e-13 with 10 million
records; or the record re-encoded with other bytes earlier in this run), the driver encodes the
item itself (:meth:`RayIngestJob._encode_here`, with its own encoder, built then). Duplicates
inside one run are not known to the workers: they are encoded, and the driver keeps the vector of
the first (as the plain run does, counted in ``reused``), or with ``dedup="skip"`` lists them.

``ray`` is imported only when this module's functions run: the query path and the plain index
path never load it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .downloads import DownloadStage
from .errors import BadImage, ClipseekError
from .failures import reason_of
from .ingest import HASH_KEY, CommitWindow, ContentBook, Dedup, IngestReport, changed_refs, relabel
from .stores.base import VectorStore
from .types import EncoderInfo, ImageRef, Record

if TYPE_CHECKING:
    from .encoders.base import Encoder

#: Refs handed to Ray Data as one dataset. Each dataset starts its own pool of model actors, so a
#: chunk is large (minutes of work) and the driver never holds more refs than this.
CHUNK = 20_000

#: Images per Ray Data batch (one encoder call on a worker).
BATCH = 32

#: Bytes of an item's sha256 the workers look up among the stored hashes (see :func:`hash_prefixes`).
PREFIX_BYTES = 8


class RayNotInstalled(ClipseekError):
    """``--ray`` without the ``ray`` extra."""


class _Embedder:
    """A Ray Data actor: one encoder per worker; turns a batch of pickled refs into vectors."""

    def __init__(self, built: dict[str, Any], plugins: Sequence[str], stored: Any = None) -> None:
        from .engine import check_encoder
        from .plugins import get_registry

        for name in plugins:  # encoders registered in the driver's process only (tests, apps)
            get_registry().register_plugin(importlib.import_module(name), name=name)
        info = EncoderInfo.from_dict(built)
        self.encoder: Encoder = get_registry().make_encoder(info.name)
        check_encoder(info.name, info, self.encoder.info)
        if stored is not None and not isinstance(stored, np.ndarray):  # an ObjectRef: a read-only view
            import ray

            stored = ray.get(stored)
        self.stored: np.ndarray | None = stored  # prefixes of the stored hashes (see hash_prefixes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["ref"])
        vectors = np.zeros((n, self.encoder.dim), dtype=np.float32)
        encoded = np.zeros(n, dtype=bool)  # False: failed, or bytes already stored (the driver has the vector)
        sha = [""] * n
        width, height = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        error, reason = [""] * n, [""] * n
        images, good = [], []
        for i, blob in enumerate(batch["ref"]):
            ref: ImageRef = pickle.loads(blob)
            try:
                img, digest = self._load(ref)
            except Exception as e:  # noqa: BLE001 - one odd file must not stop the job
                error[i], reason[i] = _failure(ref, e)
                continue
            from .images import SOURCE_SIZE

            width[i], height[i] = img.info.get(SOURCE_SIZE, img.size)
            sha[i] = digest.hex()
            if _is_stored(self.stored, digest):
                continue
            images.append(img)
            good.append(i)
        if images:
            vectors[good] = self.encoder.embed_images(images)
            encoded[good] = True
        return {
            "i": np.asarray(batch["i"]),
            "vector": vectors,
            "encoded": encoded,
            "sha256": np.asarray(sha, dtype=object),
            "width": width,
            "height": height,
            "error": np.asarray(error, dtype=object),
            "reason": np.asarray(reason, dtype=object),
        }

    def _load(self, ref: ImageRef) -> tuple[Any, bytes]:
        """Decode the item and hash its bytes (the sha256 digest), read once."""
        from .images import load_image

        if ref.path is not None:
            try:
                data = ref.path.read_bytes()
            except OSError:
                data = b""
            if not data:  # missing, unreadable or empty: load_image names the problem
                load_image(ref.path, name=ref.id)
        elif ref.data is not None:
            data = ref.data
        else:
            raise BadImage(f"{ref.id}: no path or data to read (a URL item must pass the download stage)")
        img = self.encoder.load_image(data, name=ref.id)
        return img, hashlib.sha256(data).digest()


def hash_prefixes(hashes: Iterable[str]) -> np.ndarray:
    """The first ``PREFIX_BYTES`` of each hex sha256 as sorted unique ``uint64``: what the workers
    look an item up in (8 bytes per stored record: 80 MB for 10 million). Values that are not
    hex hashes are left out (their records are never reused)."""

    def prefixes() -> Iterator[int]:
        for h in hashes:
            try:
                yield int(str(h)[: 2 * PREFIX_BYTES], 16)
            except ValueError:
                continue

    return np.unique(np.fromiter(prefixes(), dtype=np.uint64))


def _is_stored(stored: np.ndarray | None, digest: bytes) -> bool:
    """Whether a digest's prefix is among the stored ones (a prefix match, not proof)."""
    if stored is None or not len(stored):
        return False
    p = np.uint64(int.from_bytes(digest[:PREFIX_BYTES], "big"))
    j = int(np.searchsorted(stored, p))
    return j < len(stored) and stored[j] == p


def _failure(ref: ImageRef, e: Exception) -> tuple[str, str]:
    """(message, reason key) of a skipped item, as the plain pipeline reports them."""
    if isinstance(e, ClipseekError):
        return str(e).removeprefix(f"{ref.id}: "), reason_of(e)
    return f"unexpected error: {type(e).__name__}: {e}", "other"


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address`` (``auto``, ``ray://host:port``), to the
    cluster this process already joined, or to a new local one."""
    # Ray Data logs lines per dataset to the console, which would break the progress bar; clipseek
    # reports items and failures itself (a user's own setting wins).
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    try:
        import ray
    except ImportError:
        raise RayNotInstalled('--ray needs Ray: pip install "clipseek[ray]"') from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # clipseek's own bar counts the items
    ctx.execution_options.preserve_order = True  # a manifest's repeated id: the last row wins, as in a plain run
    return ray


class RayIngestJob:
    """One index run on Ray; :meth:`run` does it and returns the report (see the module docstring)."""

    def __init__(
        self,
        built: EncoderInfo,
        store: VectorStore,
        *,
        address: str | None = None,
        plugins: Sequence[str] = (),
        known: dict[str, str] | None = None,
        hashes: dict[str, str] | None = None,
        dedup: Dedup = "keep",
        workers: int | None = None,
        batch_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        report: IngestReport | None = None,
        commit_every: int = 256,
        commit_seconds: float = 5.0,
        downloads: DownloadStage,
        annotate: Callable[[np.ndarray], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.built = built
        self.store = store
        self.address = address
        self.plugins = list(plugins)
        self.known = known or {}
        self.workers = workers
        self.batch_size = batch_size or BATCH
        self.on_progress = on_progress
        self.report = report or IngestReport()
        self.downloads = downloads
        self.annotate = annotate
        self._unchanged: list[str] = []  # ids to relabel, when labelling
        self._window = CommitWindow(store, self.report, downloads, commit_every, commit_seconds)
        self._book = ContentBook(store, self._window, hashes, dedup, self._progress)
        self._stored: Any = None  # the ObjectRef of the stored hashes' prefixes, while running
        self._local: _Embedder | None = None  # the driver's own encoder, built when first needed

    def run(self, refs: Iterable[ImageRef]) -> IngestReport:
        ray = connect(self.address)
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        t0 = time.perf_counter()
        stored = hash_prefixes(self._book.by_hash)
        self._stored = ray.put(stored) if len(stored) else None  # one copy per node, not per actor
        del stored
        try:
            chunk: list[ImageRef] = []
            for ref in self._downloaded(self._changed(refs)):
                chunk.append(ref)
                if len(chunk) >= CHUNK:
                    self._run_chunk(ray, chunk, workers)
                    chunk = []
            self._run_chunk(ray, chunk, workers)
        finally:
            self._stored = None  # the object store may free the prefixes
            self._book.commit()  # also on Ctrl-C: keep what is encoded, the next run resumes after it
        if self.annotate is not None:
            relabel(self.store, self._unchanged, self.annotate)
        self.store.flush()
        self.report.seconds += time.perf_counter() - t0
        return self.report

    def _progress(self, n: int) -> None:
        if self.on_progress:
            self.on_progress(n)

    def _changed(self, refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
        remember = self._unchanged.append if self.annotate is not None else None
        return changed_refs(refs, self.known, self.report, self._progress, remember)

    def _downloaded(self, refs: Iterable[ImageRef]) -> Iterator[ImageRef]:
        for ref, error in self.downloads.run(refs):
            if error is None:
                yield ref
            else:
                msg, reason = _failure(ref, error)
                self._fail(ref, msg, reason)

    def _fail(self, ref: ImageRef, message: str, reason: str) -> None:
        self.report.fail(ref.id, message, reason, str(ref.url or ref.path or ref.metadata.get("shard") or ""))
        self.downloads.release([ref.id])
        self._progress(1)

    def _run_chunk(self, ray: Any, chunk: list[ImageRef], workers: int) -> None:
        if not chunk:
            return
        ds = ray.data.from_items([{"i": i, "ref": pickle.dumps(ref)} for i, ref in enumerate(chunk)])
        ds = ds.map_batches(
            _Embedder,
            fn_constructor_kwargs={"built": self.built.to_dict(), "plugins": self.plugins, "stored": self._stored},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            self._take(chunk, batch)

    def _take(self, chunk: list[ImageRef], batch: dict[str, np.ndarray]) -> None:
        """Turn a batch of worker results into pending records (metadata as in the plain run),
        in source order: duplicates listed, stored vectors reused, by the plain run's rules."""
        kept: list[tuple[ImageRef, np.ndarray, tuple[int, int], str]] = []
        fresh: dict[str, np.ndarray] = {}  # sha256 -> vector of an item kept from this batch
        for k, i in enumerate(batch["i"]):
            ref = chunk[int(i)]
            if batch["error"][k]:
                self._fail(ref, str(batch["error"][k]), str(batch["reason"][k]))
                continue
            sha = str(batch["sha256"][k])
            if self._book.listed_as_duplicate(ref, sha):
                continue
            size = (int(batch["width"][k]), int(batch["height"][k]))
            vec = self._book.known_vector(sha)
            if vec is None:
                vec = fresh.get(sha)
            if vec is not None:
                self.report.reused += 1
            elif batch["encoded"][k]:
                vec = np.asarray(batch["vector"][k])
            else:
                here = self._encode_here(ref)
                if here is None:
                    continue
                vec, sha, size = here
            self._book.own(ref, sha)
            fresh.setdefault(sha, vec)
            kept.append((ref, vec, size, sha))
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        vectors = np.stack([v for _, v, _, _ in kept]) if kept else np.zeros((0, self.built.dim), np.float32)
        labels = self.annotate(vectors) if self.annotate is not None and kept else [{} for _ in kept]
        for (ref, vec, (width, height), sha), more in zip(kept, labels):
            meta = dict(ref.metadata)
            meta.update(more)
            meta.setdefault("width", width)
            meta.setdefault("height", height)
            meta["indexed_at"] = now
            if ref.fingerprint is not None:
                meta["_fingerprint"] = ref.fingerprint
            meta[HASH_KEY] = sha
            self._book.keep(Record(ref.id, vec, meta), ref.id not in self.known)
        self.report.count("encoded", len(kept))
        self._progress(len(kept))
        if self._window.due():
            self._book.commit()

    def _encode_here(self, ref: ImageRef) -> tuple[np.ndarray, str, tuple[int, int]] | None:
        """Read and encode one item on the driver: a worker skipped it because its hash prefix is
        stored, but no stored record has its bytes now (see the module docstring). None when it
        fails (recorded)."""
        if self._local is None:
            self._local = _Embedder(self.built.to_dict(), ())  # this process has the plugins
        row = self._local({"i": np.zeros(1, dtype=np.int64), "ref": np.array([pickle.dumps(ref)], dtype=object)})
        if row["error"][0]:
            self._fail(ref, str(row["error"][0]), str(row["reason"][0]))
            return None
        return np.asarray(row["vector"][0]), str(row["sha256"][0]), (int(row["width"][0]), int(row["height"][0]))


def ray_ingest(refs: Iterable[ImageRef], built: EncoderInfo, store: VectorStore, **options: Any) -> IngestReport:
    """Embed and store every ref that is not unchanged, on Ray (see :class:`RayIngestJob`)."""
    return RayIngestJob(built, store, **options).run(refs)
