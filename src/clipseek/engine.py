"""The facade the CLI, the REST API and Python users share: :class:`Engine` and :class:`Collection`.

An Engine owns a data directory. Each collection is a folder ``<data_dir>/collections/<name>/``
holding ``collection.json`` (the encoder it was built with, the store kind) and the store's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from . import filters
from .downloads import DEFAULT_CONCURRENCY, DownloadStage
from .encoders.base import Calibration, Encoder
from .errors import (
    BadVector,
    ClipseekError,
    CollectionDamaged,
    CollectionExists,
    CollectionNotFound,
    EncoderMismatch,
    RecordNotFound,
    VectorOnly,
)
from .failures import Failure
from .ingest import HASH_KEY, Dedup, IngestReport, ingest
from .ingest import prune as prune_gone
from .manifest import Columns
from .net import MAX_DOWNLOAD_BYTES, Limits, fetch_url
from .paths import default_data_dir
from .plugins import get_registry
from .sources import FolderSource, Source, source_for
from .stores.base import VectorStore
from .types import EncoderInfo, Hit, ImageRef, Record, as_unit_vectors

if TYPE_CHECKING:
    from .dedup import Group as DuplicateGroup

FORMAT_VERSION = 1
DEFAULT_STORE = "local"
DEFAULT_COLLECTION = "default"
# The encoder name recorded by a collection created with a dimension and no model: it holds vectors
# made elsewhere (the REST API's and the Pinecone-compatible API's vector-only indexes).
VECTOR_ONLY = "vectors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class SearchResult:
    collection: str
    query: dict[str, Any]
    hits: list[Hit]
    took_ms: float
    model: str
    where: list[filters.Condition] = field(default_factory=list)
    threshold: float | None = None
    encode_ms: float = 0.0  # turning the query into a vector (includes loading the model on first use)
    search_ms: float = 0.0  # the store's search, filters included
    query_image: Image.Image | None = None  # the decoded query image (for a picture grid), if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model": self.model,
            "query": self.query,
            "where": filters.to_json(self.where),
            "threshold": self.threshold,
            "took_ms": round(self.took_ms, 3),
            "timing": {"encode_ms": round(self.encode_ms, 3), "search_ms": round(self.search_ms, 3)},
            "hits": [h.to_dict() for h in self.hits],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


def _public(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata as users see it: keys starting with '_' are clipseek's bookkeeping."""
    return {k: v for k, v in meta.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Query:
    """One query turned into a vector: what :meth:`Collection.query_vector` returns.

    ``kind`` picks the calibration ("text" or "image"); ``exclude`` is the record a ``like`` query
    started from (never its own result); ``image`` is the decoded query image, when there is one
    (the CLI draws it in the grid without decoding it again).
    """

    vector: np.ndarray
    description: dict[str, Any]
    kind: str
    exclude: str | None = None
    image: Image.Image | None = None


def _remember_ids(refs: Iterable[ImageRef], seen: set[str]) -> Iterator[ImageRef]:
    """Pass refs through, noting their ids (what ``prune`` must not delete)."""
    for ref in refs:
        seen.add(ref.id)
        yield ref


class Collection:
    """A named set of records built with one encoder. Get one from :meth:`Engine.collection`."""

    def __init__(
        self, engine: Engine, name: str, path: Path, config: dict[str, Any], *, read_only: bool = False
    ) -> None:
        self.engine = engine
        self.read_only = read_only
        self.name = name
        self.path = path
        self.config = config
        self.encoder_info = EncoderInfo.from_dict(config["encoder"])
        self.store_name: str = config["store"]
        cls = get_registry().store_class(self.store_name)
        store_path = path / config.get("store_dir", "store") if cls.persistent else None  # store_dir: after a migrate
        options = dict(config.get("store_options") or {})  # e.g. a Milvus server's uri
        if read_only:
            options["read_only"] = True
        self.store: VectorStore = cls(store_path, self.encoder_info.dim, **options)
        self._encoder: Encoder | None = None

    # -------------------------------------------------------------------------------- encoder

    @property
    def vector_only(self) -> bool:
        """True for a collection created with a dimension and no model: it is searched by vector or
        by id, its score is the raw cosine, and it has no encoder."""
        return self.encoder_info.name == VECTOR_ONLY

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use and checked against what built the data."""
        if self.vector_only:
            raise VectorOnly(
                f"collection {self.name!r} holds vectors only (created with a dimension, no model): "
                "search it by vector or by an existing id, and add records as vectors"
            )
        if self._encoder is None:
            enc = self.engine.encoder(self.encoder_info.name)
            check_encoder(self.name, self.encoder_info, enc.info)
            self._encoder = enc
        return self._encoder

    def calibration(self, kind: str) -> Calibration | None:
        """The score calibration for a query kind: from collection.json, so ``like`` and vector
        queries need no model; collections made before it was recorded ask the encoder.
        None for a vector-only collection, whose score is the raw cosine."""
        if self.vector_only:
            return None
        stored = self.config.get("calibration")
        if stored:
            cal = {k: Calibration(float(v["center"]), float(v["scale"])) for k, v in stored.items()}
        else:
            cal = self.encoder.calibration
        return cal.get(kind) or cal["image"]

    # -------------------------------------------------------------------------------- writing

    def index(
        self,
        target: str | Path | Source | Iterable[ImageRef],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        labels: str | Sequence[str] | None = None,
        label_top: int = 1,
        label_min_prob: float = 0.0,
        dedup: Dedup = "keep",
        prune: bool = False,
        allow_private_urls: bool | None = None,
        proxy: str | None = None,
        keep_downloads: bool = True,
        download_concurrency: int = DEFAULT_CONCURRENCY,
        max_download_mb: float = MAX_DOWNLOAD_BYTES / 1e6,
        columns: Columns | None = None,
        report: IngestReport | None = None,
        ray: str | None = None,
        ray_plugins: Sequence[str] = (),
    ) -> IngestReport:
        """Index a folder, an image file, a manifest (see :func:`clipseek.sources.source_for`),
        a Source or ImageRefs. Unchanged items are skipped.

        ``columns`` names a manifest's image, caption and id columns (default: detected).
        ``report`` may be passed in to watch its live ``counts`` from ``on_progress``; the run
        is also recorded in ``last_run.json`` (see :meth:`last_run`). ``on_total`` is called with
        the number of items when the source can tell cheaply.

        URL items (``ImageRef(url=...)``) are downloaded, ``download_concurrency`` at a time and at
        most ``max_download_mb`` each, into the collection's ``downloads/`` cache; ``keep_downloads``
        keeps the originals there (the record's ``path``) after indexing. Local and private
        addresses are refused unless ``allow_private_urls`` (default: env ``CLIPSEEK_ALLOW_PRIVATE_URLS``).
        ``proxy`` is an http(s) proxy URL for the downloads, ``""`` for none; None (the default) takes
        ``CLIPSEEK_PROXY``, else ``https_proxy``/``http_proxy``/``all_proxy``/``no_proxy``
        (:func:`clipseek.net.proxies_from`).

        With ``labels``, each image also gets zero-shot labels in its metadata (``labels``: the
        ``label_top`` most probable of the candidates, ``label_probs``: their probabilities); items
        already indexed and unchanged are relabelled from their stored vectors, without re-encoding.
        An item whose bytes are already stored reuses that vector; ``dedup="skip"`` indexes exact
        duplicates once and lists their paths in ``duplicates``. ``prune`` (folders only) then
        deletes the records of files inside the folder that are gone.

        With ``ray`` (a cluster address, or ``""`` for the cluster this process joined or a new
        local one), items are loaded and encoded by Ray workers and written here, in the same
        records (see :mod:`clipseek.ray_ingest`); ``ray_plugins`` names modules that register
        encoders the workers would not find through entry points.
        """
        src = source_for(target, columns) if isinstance(target, (str, Path)) else target
        prune_root: Path | None = None
        if prune:
            if not isinstance(src, FolderSource):
                raise ClipseekError(f"{target}: --prune removes records of files gone from a folder; give a folder")
            prune_root = src.root
        if on_total:
            total = _count(src)
            if total is not None:
                on_total(total)
        report = report if report is not None else IngestReport()
        annotate = self._labeller(labels, label_top, label_min_prob) if labels else None
        finished = False
        known = self.store.fingerprints()
        hashes = self.store.values(HASH_KEY)
        items = _CountingProblems(src, report)
        seen: set[str] = set()  # the ids the source listed, for --prune
        listed = _remember_ids(items, seen) if prune_root is not None else items  # streamed, never held
        downloads = DownloadStage(
            self.path / "downloads",
            limits=Limits(max_bytes=int(max_download_mb * 1e6)),
            concurrency=download_concurrency,
            allow_private=allow_private_urls,
            keep=keep_downloads,
            proxy=proxy,
        )
        try:
            if ray is not None:
                from .ray_ingest import ray_ingest  # here: Ray is imported only when asked for

                ray_ingest(
                    listed,
                    self.encoder_info,
                    self.store,
                    address=ray or None,
                    plugins=ray_plugins,
                    known=known,
                    hashes=hashes,
                    dedup=dedup,
                    workers=workers,
                    batch_size=batch_size,
                    on_progress=on_progress,
                    report=report,
                    downloads=downloads,
                    annotate=annotate,
                )
            else:
                ingest(
                    listed,
                    self.encoder,
                    self.store,
                    batch_size=batch_size,
                    workers=workers or (os.cpu_count() or 2),
                    known=known,
                    hashes=hashes,
                    dedup=dedup,
                    on_progress=on_progress,
                    report=report,
                    annotate=annotate,
                    downloads=downloads,
                )
            finished = True
            if prune_root is not None:  # only after a whole listing: an interrupted run prunes nothing
                report.pruned = prune_gone(self.store, prune_root, seen)
        finally:
            # The source's own findings (bad rows, unreadable folders) are complete once it is read;
            # the live counter already holds those seen before its last item.
            problems = [Failure(*f) for f in getattr(src, "problems", [])]
            report.failed.extend(problems)
            report.count("failed", len(problems) - items.counted)
            repeated = getattr(src, "duplicates", [])
            report.repeated_ids.extend(repeated)
            # A repeated new id was counted as added once per row: its later rows updated it.
            for rid, rows in repeated:
                if rid not in known:
                    moved = min(len(rows) - 1, report.added)
                    report.added -= moved
                    report.updated += moved
            self._record_run(target, report, finished)
        return report

    def _record_run(self, target: object, report: IngestReport, finished: bool) -> None:
        """Remember the last index run in ``last_run.json`` (for ``info``), written atomically."""
        run = {
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(target) if isinstance(target, (str, Path)) else type(target).__name__,
            "completed": finished,
            "added": report.added,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "failed": len(report.failed),
            "failed_by_reason": report.by_reason(),
            "seconds": round(report.seconds, 3),
        }
        tmp = self.path / "last_run.json.tmp"
        try:
            tmp.write_text(json.dumps(run, ensure_ascii=False, indent=2))
            os.replace(tmp, self.path / "last_run.json")
        except OSError:
            pass  # bookkeeping for `info`: never the reason an index run fails

    def last_run(self) -> dict[str, Any] | None:
        """What the last index run into this collection did (None before the first)."""
        try:
            run = json.loads((self.path / "last_run.json").read_text())
        except (OSError, ValueError):
            return None
        return run if isinstance(run, dict) else None

    def _labeller(
        self, labels: str | Sequence[str], top: int, min_prob: float
    ) -> Callable[[np.ndarray], list[dict[str, Any]]]:
        from . import zeroshot

        labels = zeroshot.parse_labels(labels)
        if len(labels) < 2:
            raise ClipseekError("--labels needs at least two candidate labels to choose between")
        classifier = zeroshot.label_vectors(self.encoder, labels)  # prompts embedded once per run

        def annotate(vectors: np.ndarray) -> list[dict[str, Any]]:
            return zeroshot.label_metadata(self.encoder, vectors, labels, k=top, min_prob=min_prob, classifier=classifier)

        return annotate

    def add_vectors(
        self, ids: Sequence[str], vectors: Any, metadata: Sequence[dict[str, Any] | None] | None = None
    ) -> int:
        """Insert or replace records made elsewhere: ``vectors`` is (n, dim) (one row per id; rows are
        L2-normalised here), ``metadata`` one dict (or None) per id. The last of repeated ids wins.
        All rows are checked before any is written; returns how many records were written."""
        ids = list(ids)
        for i in ids:
            if not isinstance(i, str) or not i or len(i) > 512:
                raise ClipseekError(f"bad record id {i!r}: ids are non-empty strings of at most 512 characters")
        vecs = as_unit_vectors(vectors, self.encoder_info.dim) if ids else np.zeros((0, self.encoder_info.dim), np.float32)
        if len(vecs) != len(ids):
            raise BadVector(f"{len(ids)} ids but {len(vecs)} vectors")
        metas = list(metadata) if metadata is not None else [None] * len(ids)
        if len(metas) != len(ids):
            raise ClipseekError(f"{len(ids)} ids but {len(metas)} metadata entries")
        last: dict[str, Record] = {}
        for id_, vec, meta in zip(ids, vecs, metas):
            meta = dict(meta or {})
            bad = [k for k in meta if not isinstance(k, str) or not k or k.startswith("_")]
            if bad:
                raise ClipseekError(f"record {id_!r}: bad metadata field name {bad[0]!r} (names starting with '_' are clipseek's own)")
            last[id_] = Record(id_, vec, meta)
        if last:
            self.store.upsert(list(last.values()))
            self.store.flush()
        return len(last)

    def delete(self, ids: Iterable[str] = (), where: Any = None) -> int:
        """Delete records by id (or by file path, as ``like`` accepts) and those matching ``where``."""
        targets = [self._stored_id(i) for i in ids]
        conds = self._conditions(where)
        if conds:
            targets.extend(self.store.ids(conds))
        return self.store.delete(targets)

    # -------------------------------------------------------------------------------- reading

    def count(self, where: Any = None) -> int:
        return self.store.count(self._conditions(where))

    def fields(self) -> list[str]:
        """The metadata fields users see and filter on ('_' fields are clipseek's bookkeeping)."""
        return [f for f in self.store.fields() if not f.startswith("_")]

    def _conditions(self, where: Any) -> list[filters.Condition]:
        """Parse and check a filter once, before any work: a field no record shows users (or a
        bookkeeping '_' field) is an unknown-field BadFilter."""
        conds = filters.parse(where)
        if conds:
            filters.check_fields(conds, self.fields())
        return conds

    def get(self, id: str) -> dict[str, Any]:
        rec = self._resolve(id)
        return {"id": rec.id, "metadata": _public(rec.metadata)}

    def _stored_id(self, id: str) -> str:
        """``id`` itself, or for a path to an indexed file (relative, ~), the id it is stored under:
        folder ids are absolute resolved paths."""
        if self.store.get([id])[0] is not None:
            return id
        p = Path(id).expanduser()
        if p.exists():
            return str(p.resolve())
        return id

    def _resolve(self, id: str) -> Record:
        rec = self.store.get([self._stored_id(id)])[0]
        if rec is None:
            raise RecordNotFound(f"no record {id!r} in collection {self.name!r}")
        return rec

    def query_vector(
        self,
        text: str | None = None,
        *,
        image: str | Path | bytes | None = None,
        like: str | None = None,
        vector: Any = None,
        allow_private_urls: bool | None = None,
        proxy: str | None = None,
    ) -> Query:
        """Turn one query into a :class:`Query`. Only text and image queries load the model.

        An image URL whose host is a local or private address is refused unless
        ``allow_private_urls`` (default: env ``CLIPSEEK_ALLOW_PRIVATE_URLS``); it is downloaded
        through ``proxy`` (None: the environment's; ``""``: none; see :meth:`index`)."""
        given = [x is not None for x in (text, image, like, vector)]
        if sum(given) != 1:
            raise ClipseekError("give exactly one query: a text, an image, an existing id (like) or a vector")
        if text is not None:
            if not text.strip():
                raise ClipseekError("empty text query")
            return Query(self.encoder.embed_text(text), {"kind": "text", "text": text}, "text")
        if image is not None:
            load = self.encoder.load_image
            if isinstance(image, bytes):
                img, desc = load(image, name="<uploaded image>"), "<bytes>"
            elif isinstance(image, str) and image.startswith(("http://", "https://")):
                data = fetch_url(image, allow_private=allow_private_urls, proxy=proxy)
                img, desc = load(data, name=image), image
            else:
                img, desc = load(image), str(image)
            return Query(self.encoder.embed_image(img), {"kind": "image", "image": desc}, "image", image=img)
        if like is not None:
            rec = self._resolve(like)
            return Query(np.asarray(rec.vector), {"kind": "like", "like": rec.id}, "image", exclude=rec.id)
        vecs = as_unit_vectors(vector, self.encoder_info.dim)
        if len(vecs) != 1:
            raise BadVector(f"give one query vector, got {len(vecs)} rows (shape {np.shape(vector)})")
        return Query(vecs[0], {"kind": "vector"}, "image")

    def search(
        self,
        text: str | None = None,
        *,
        image: str | Path | bytes | None = None,
        like: str | None = None,
        vector: Any = None,
        top: int = 10,
        where: Any = None,
        threshold: float | None = None,
        min_cosine: float | None = None,
        allow_private_urls: bool | None = None,
        proxy: str | None = None,
    ) -> SearchResult:
        """Search by text, image (path, URL or bytes), an existing record id, or a raw vector.

        ``threshold`` is the calibrated score in [0, 1] (0.5: probably a real match);
        ``min_cosine`` a raw cosine floor. Results carry both scores and all metadata.
        ``allow_private_urls`` lets an image URL reach local or private addresses; ``proxy`` is
        the proxy it is downloaded through (see :meth:`index`).
        """
        if top < 1:
            raise ClipseekError(f"top must be at least 1, got {top}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise ClipseekError(f"threshold is a calibrated score between 0 and 1, got {threshold}")
        t0 = time.perf_counter()
        conds = self._conditions(where)  # before encoding: a bad filter fails without loading a model
        query = self.query_vector(
            text, image=image, like=like, vector=vector, allow_private_urls=allow_private_urls, proxy=proxy
        )
        t1 = time.perf_counter()
        cal = self.calibration(query.kind)
        floor = min_cosine
        if threshold is not None:
            t_cos = cal.cosine_at(threshold) if cal is not None else threshold
            floor = t_cos if floor is None else max(floor, t_cos)
        hits = self.store.search(
            query.vector, limit=top, where=conds, min_cosine=floor, exclude=[query.exclude] if query.exclude else []
        )
        t2 = time.perf_counter()
        for h in hits:
            h.score = float(cal.score(h.cosine)) if cal is not None else h.cosine
            h.metadata = _public(h.metadata)
        return SearchResult(
            collection=self.name,
            query=query.description,
            hits=hits,
            took_ms=(time.perf_counter() - t0) * 1000,
            model=self.encoder_info.name,
            where=conds,
            threshold=threshold,
            encode_ms=(t1 - t0) * 1000,
            search_ms=(t2 - t1) * 1000,
            query_image=query.image,
        )

    def near_duplicates(
        self, threshold: float, *, neighbours: int = 10, on_progress: Callable[[int], None] | None = None
    ) -> list[DuplicateGroup]:
        """Groups of records whose vectors have cosine >= ``threshold`` (see :mod:`clipseek.dedup`)."""
        from .dedup import near_duplicates

        return near_duplicates(self.store, threshold, neighbours=neighbours, on_progress=on_progress)

    def info(self) -> dict[str, Any]:
        st = self.store.stats()
        return {
            "name": self.name,
            "path": str(self.path),
            "model": self.encoder_info.to_dict(),
            "store": self.store_name,
            "count": st.get("count"),
            "disk_bytes": _du(self.path),
            "created_at": self.config.get("created_at"),
            "fields": self.fields(),
            "last_run": self.last_run(),
        }

    def check(self) -> dict[str, Any]:
        """Verify the collection's stored data without changing it (see ``VectorStore.check``)."""
        return {"name": self.name, **self.store.check()}

    def repair(self) -> dict[str, Any]:
        """Rebuild the derived data and set aside records whose vectors are damaged, listing
        their ids to re-index (see ``VectorStore.repair``); needs the collection open for writing."""
        return {"name": self.name, **self.store.repair()}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_encoder(collection: str, built: EncoderInfo, now: EncoderInfo) -> None:
    if (built.model_id, built.dim, built.version) != (now.model_id, now.dim, now.version):
        raise EncoderMismatch(
            f"collection {collection!r} was built with {built.name} ({built.model_id}, {built.dim}-d, "
            f"version {built.version}) but the encoder is now {now.name} ({now.model_id}, {now.dim}-d, "
            f"version {now.version}); re-index into a new collection to use it"
        )


class _CountingProblems:
    """The source's items, while its skipped items (bad rows ...) go into the live 'failed'
    counter; ``counted`` says how many it has counted so far."""

    def __init__(self, src: Iterable[ImageRef], report: IngestReport) -> None:
        self.src, self.report, self.counted = src, report, 0

    def __iter__(self) -> Iterator[ImageRef]:
        for ref in self.src:
            problems = getattr(self.src, "problems", None)  # read each time: a source may rebind it
            if problems is not None and len(problems) > self.counted:
                self.report.count("failed", len(problems) - self.counted)
                self.counted = len(problems)
            yield ref


def _count(src: object) -> int | None:
    """The number of items of a source when it is cheap to know (never by listing a stream)."""
    if isinstance(src, Sized):
        return len(src)
    count = getattr(src, "count", None)
    n = count() if callable(count) else None
    return n if isinstance(n, int) else None


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total


class Engine:
    """Entry point of the Python API::

        engine = Engine()                         # data in $CLIPSEEK_HOME or ~/.local/share/clipseek
        photos = engine.collection("photos")      # open, or create with the default model
        photos.index("~/Pictures")
        for hit in photos.search("白色的猫", top=5).hits:
            print(hit.score, hit.id)
    """

    def __init__(
        self, data_dir: str | Path | None = None, *, wrap_encoder: Callable[[Encoder], Encoder] | None = None
    ) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        #: applied to each encoder when it is loaded (the server's query batching); encoders already
        #: loaded when it is set stay as they are
        self.wrap_encoder = wrap_encoder
        self._encoders: dict[str, Encoder] = {}
        self._encoders_lock = threading.Lock()  # concurrent first queries (the server) load a model once
        self._open: dict[str, Collection] = {}

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    def encoder(self, name: str) -> Encoder:
        """One shared encoder instance per name (models are loaded once per process)."""
        enc = self._encoders.get(name)
        if enc is None:
            with self._encoders_lock:
                enc = self._encoders.get(name)
                if enc is None:
                    enc = get_registry().make_encoder(name)
                    enc = self.wrap_encoder(enc) if self.wrap_encoder else enc
                    self._encoders[name] = enc
        return enc

    def names(self) -> list[str]:
        d = self.collections_dir
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / "collection.json").is_file())

    def exists(self, name: str) -> bool:
        return (self.collections_dir / name / "collection.json").is_file()

    def create(
        self,
        name: str,
        model: str | None = None,
        store: str | None = None,
        *,
        dim: int | None = None,
        store_uri: str | None = None,
        store_options: dict[str, Any] | None = None,
    ) -> Collection:
        """Create a collection filled by ``model`` (default: ``$CLIPSEEK_MODEL`` or the default
        model), or, with ``dim`` and no model, a vector-only collection of that dimension.

        ``store_uri`` and ``store_options`` configure the store (a Milvus server's uri, db, prefix)
        and are remembered in collection.json; credentials (a token) are not options: they come
        from the environment or the configuration file each time."""
        if not _NAME_RE.match(name):
            raise ClipseekError(
                f"bad collection name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
            )
        if self.exists(name):
            raise CollectionExists(f"collection {name!r} already exists")
        enc: Encoder | None = None
        if dim is not None:
            if model is not None:
                raise ClipseekError("give a model or a dimension, not both: a model fixes the dimension")
            if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
                raise ClipseekError(f"bad dimension {dim!r}: a whole number from 1 to 65536")
            info = EncoderInfo(name=VECTOR_ONLY, model_id="", dim=dim, version="1")
            calibration: dict[str, Any] | None = None
        else:
            if model is None:
                from .modelfiles import resolve_default_model

                model = resolve_default_model(os.environ.get("CLIPSEEK_MODEL"))
            enc = self.encoder(model)
            info = enc.info
            calibration = {k: {"center": c.center, "scale": c.scale} for k, c in enc.calibration.items()}
        store_name = store or DEFAULT_STORE
        store_cls = get_registry().store_class(store_name)  # fail early on an unknown store
        options = {k: v for k, v in {**(store_options or {}), "uri": store_uri}.items() if v is not None}
        secret = sorted(set(options) & store_cls.secret_options)
        if secret:
            raise ClipseekError(
                f"the {store_name} store's {', '.join(secret)} is never written to collection.json: give it in the "
                f"environment (e.g. CLIPSEEK_{store_name.upper()}_{secret[0].upper()}) or the configuration file"
            )
        path = self.collections_dir / name
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT_VERSION,
            "name": name,
            "encoder": info.to_dict(),
            # The encoder's score calibration, so queries from stored vectors need no model.
            "calibration": calibration,
            "store": store_name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if options:
            config["store_options"] = options
        tmp = path / "collection.json.tmp"
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, path / "collection.json")
        try:
            col = Collection(self, name, path, config)
        except BaseException:  # e.g. a store server that does not answer: leave no half-made collection
            shutil.rmtree(path, ignore_errors=True)
            raise
        col._encoder = enc
        self._open[name] = col
        return col

    def open(self, name: str, *, read_only: bool = False) -> Collection:
        """Open a collection. ``read_only`` lets searches run while another process indexes into
        it (they see the records committed when the collection was opened); writes are refused."""
        cached = self._open.get(name)
        if cached is not None and (read_only or not cached.read_only):
            return cached
        cfg_path = self.collections_dir / name / "collection.json"
        if not cfg_path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise CollectionNotFound(f"no collection {name!r} in {self.data_dir} (collections: {known})")
        if cached is not None:
            cached.close()
        col = Collection(self, name, cfg_path.parent, self._config(name), read_only=read_only)
        self._open[name] = col
        return col

    def _config(self, name: str) -> dict[str, Any]:
        """The collection's ``collection.json``; CollectionDamaged naming the file when it cannot be used."""
        cfg_path = self.collections_dir / name / "collection.json"
        try:
            config = json.loads(cfg_path.read_text())
            EncoderInfo.from_dict(config["encoder"])
            if not isinstance(config["store"], str):
                raise TypeError("'store' is not a name")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            why = e.strerror if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
            raise CollectionDamaged(
                f"{cfg_path}: not a valid collection file ({why}); restore it, or delete the collection "
                f"with `clipseek delete --all -c {name}`"
            ) from None
        return config  # type: ignore[no-any-return]

    def collection(
        self,
        name: str = DEFAULT_COLLECTION,
        model: str | None = None,
        store: str | None = None,
        *,
        store_uri: str | None = None,
        store_options: dict[str, Any] | None = None,
    ) -> Collection:
        """Open ``name``, or create it with ``model`` and ``store`` (and the store's ``store_uri``
        and ``store_options``, see :meth:`create`) when it does not exist.

        Asking for a model, a store or a store uri other than those an existing collection was
        built with is refused: the collection remembers them.
        """
        if self.exists(name):
            col = self.open(name)
            if model is not None and model != col.encoder_info.name:
                raise EncoderMismatch(
                    f"collection {name!r} was built with model {col.encoder_info.name!r}, not {model!r}; "
                    "use another collection name for another model"
                )
            had = (col.config.get("store_options") or {}).get("uri")
            if (store is not None and store != col.store_name) or (store_uri is not None and store_uri != had):
                where = f"{col.store_name}" + (f" at {had}" if had else "")
                raise ClipseekError(
                    f"collection {name!r} lives in the {where} store, not {store or col.store_name}"
                    + (f" at {store_uri}" if store_uri else "") + "; use `clipseek migrate` to move it"
                )
            return col
        return self.create(name, model=model, store=store, store_uri=store_uri, store_options=store_options)

    def drop(self, name: str) -> None:
        """Delete a collection and its files. Refused while another process has it open for
        writing (an `index` run): the store's writer lock is held for the whole removal."""
        col = self._open.pop(name, None)
        if col is not None:
            col.close()
        path = self.collections_dir / name
        if not (path / "collection.json").is_file():
            raise CollectionNotFound(f"no collection {name!r}")
        try:  # a damaged collection.json must not stop its deletion: fall back to the default store
            config = self._config(name)
            store_name, store_options = config["store"], dict(config.get("store_options") or {})
        except CollectionDamaged:
            store_name, store_options, config = DEFAULT_STORE, {}, {}
        store_dir = path / str(config.get("store_dir", "store"))
        guard: contextlib.AbstractContextManager[None]
        cls: type[VectorStore] | None = None
        try:
            cls = get_registry().store_class(store_name)
            guard = cls.exclusive(store_dir if cls.persistent else None)
        except ClipseekError:  # its store plugin is gone: nothing can hold it open
            guard = contextlib.nullcontext()
        try:
            with guard:
                if cls is not None:  # what the store keeps elsewhere (a server's collection) goes first
                    cls.destroy(store_dir if cls.persistent else None, **store_options)
                # Remove the config first: a crash half-way then leaves no half-collection that looks valid.
                (path / "collection.json").unlink()
                shutil.rmtree(path)
        except ClipseekError as e:
            raise ClipseekError(f"cannot delete collection {name!r}: {e}") from None

    def close(self) -> None:
        for col in self._open.values():
            col.close()
        self._open.clear()
        for enc in self._encoders.values():
            enc.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Collection", "Engine", "Query", "SearchResult", "default_data_dir"]
