"""The VectorStore seam.

A store holds the records of one collection: ids, unit float32 vectors of one dimension, and JSON
metadata. It answers exact or approximate cosine top-k queries with metadata filters applied
*inside* the search (a filter never drops a true match that an exact filtered scan would return).

Contract (checked for every store by ``tests/contract/test_store_contract.py``):
- ``upsert`` replaces a record with the same id (vector and metadata), atomically per call: after a
  crash, a call's records are either all there or none are;
- ``search`` returns at most ``limit`` hits sorted by cosine descending (ties by id ascending),
  only those with ``cosine >= min_cosine`` when given, never ids in ``exclude``, and only records
  that satisfy every condition in ``where`` (semantics of :mod:`clipseek.filters`);
- a filter on a field that no record has raises :class:`~clipseek.errors.BadFilter`;
- a vector of the wrong dimension raises :class:`~clipseek.errors.BadVector`;
- ``update_metadata`` changes metadata only: the record keeps its vector;
- ``Hit.score`` is left equal to the cosine; calibration is the engine's job.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BadVector
from ..filters import Condition
from ..types import Hit, Record


def _json_default(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=repr)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"metadata value {v!r} of type {type(v).__name__} cannot be stored as JSON")


def metadata_json(meta: Mapping[str, Any]) -> str:
    """A record's metadata as the JSON text a persistent store keeps: times as ISO-8601, sets as
    sorted lists, numpy scalars and arrays as numbers and lists, paths as strings; any other
    non-JSON value is a TypeError naming it. One encoding for every store, so a record round-trips
    the same whichever store holds it."""
    return json.dumps(meta, default=_json_default, ensure_ascii=False)


class VectorStore(ABC):
    """Base class of every store. ``path`` is a directory the store owns (None: in memory)."""

    name: ClassVar[str] = ""
    persistent: ClassVar[bool] = True
    #: options never written to collection.json (credentials: given again by the environment or
    #: the configuration file each time the store is opened)
    secret_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, path: Path | None, dim: int, **options: Any) -> None:
        if int(dim) <= 0:
            raise BadVector(f"dimension must be positive, got {dim}")
        self.path = path
        self.dim = int(dim)

    @abstractmethod
    def upsert(self, records: Sequence[Record]) -> None: ...

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; returns how many existed."""

    @abstractmethod
    def get(self, ids: Sequence[str]) -> list[Record | None]:
        """Records (with vectors) for the ids, None where an id is unknown."""

    @abstractmethod
    def count(self, where: Sequence[Condition] = ()) -> int: ...

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        limit: int = 10,
        where: Sequence[Condition] = (),
        min_cosine: float | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]: ...

    @abstractmethod
    def fields(self) -> list[str]:
        """Names of the metadata fields present in the collection (what filters may name)."""

    @abstractmethod
    def ids(self, where: Sequence[Condition] = ()) -> Iterable[str]:
        """The ids of the records matching ``where`` (all when empty), order unspecified."""

    def update_metadata(self, updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Merge ``updates[id]`` into the metadata of each existing record, leaving its vector
        alone; atomic per call like ``upsert``. Unknown ids are ignored; returns how many existed.

        This default reads and rewrites whole records; stores override it with a metadata-only write.
        """
        ids = list(updates)
        recs = [r for r in self.get(ids) if r is not None]
        if recs:
            self.upsert([Record(r.id, r.vector, {**r.metadata, **updates[r.id]}) for r in recs])
        return len(recs)

    def fingerprints(self) -> dict[str, str]:
        """id -> ``_fingerprint`` metadata value, for incremental re-indexing."""
        out: dict[str, str] = {}
        for rec in self.get(list(self.ids())):
            if rec is not None and "_fingerprint" in rec.metadata:
                out[rec.id] = str(rec.metadata["_fingerprint"])
        return out

    def neighbours(
        self, ids: Sequence[str], limit: int, min_cosine: float | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each of ``ids`` (an unknown id gets ``[]``): the nearest other records to its own
        stored vector as (id, cosine), like ``search(vector, limit, min_cosine=..., exclude=[id])``
        (and as approximate as the store's search). Stores override it to answer many queries at
        once (``clipseek dedup`` asks it for every record)."""
        out: list[list[tuple[str, float]]] = []
        for rid, rec in zip(ids, self.get(list(ids))):
            hits = [] if rec is None else self.search(rec.vector, limit, min_cosine=min_cosine, exclude=[rid])
            out.append([(h.id, h.cosine) for h in hits])
        return out

    def values(self, key: str) -> dict[str, Any]:
        """id -> ``metadata[key]`` for every record that has ``key`` (bookkeeping lookups such as
        content hashes, which must not load every vector). Stores override it with a cheap query."""
        out: dict[str, Any] = {}
        for rec in self.get(list(self.ids())):
            if rec is not None and key in rec.metadata:
                out[rec.id] = rec.metadata[key]
        return out

    def flush(self) -> None:  # noqa: B027
        """Make everything written so far durable (optional; upsert is already atomic)."""

    def close(self) -> None:  # noqa: B027
        """Release files and memory."""

    def check(self) -> dict[str, Any]:
        """Verify the stored data without changing it: ``{"ok": bool, "records": n, "problems":
        [{"file", "problem", "fix", "ids"?}]}``. Stores with nothing on disk have nothing to check."""
        return {"ok": True, "records": self.count(), "problems": []}

    def repair(self) -> dict[str, Any]:
        """Rebuild derived data; ``{"records": n, "rebuilt": [what], "set_aside": [ids to re-index]}``."""
        return {"records": self.count(), "rebuilt": [], "set_aside": []}

    @classmethod
    @contextmanager
    def exclusive(cls, path: Path | None) -> Iterator[None]:
        """Hold the store at ``path`` against writers without opening it (to delete it); raises
        :class:`~clipseek.errors.ClipseekError` when another process has it open for writing."""
        yield

    @classmethod
    def destroy(cls, path: Path | None, **options: Any) -> None:  # noqa: B027
        """Delete what the store at ``path`` keeps outside it (a server's collection) before the
        engine removes ``path``; nothing for stores whose data is all under ``path``."""
        return None

    def stats(self) -> dict[str, Any]:
        return {"store": self.name, "count": self.count(), "dim": self.dim}

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
