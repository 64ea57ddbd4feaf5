"""The in-memory store: an exact numpy scan. It is the reference every other store is checked
against, and handy for tests and throw-away collections (nothing is written to disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .. import filters
from ..filters import Condition
from ..types import Hit, Record, as_unit_vectors
from .base import VectorStore
from .topk import cosines, top_candidates


class MemoryStore(VectorStore):
    name = "memory"
    persistent = False

    def __init__(self, path: Path | None, dim: int, **options: Any) -> None:
        super().__init__(None, dim)
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._meta: list[dict[str, Any]] = []

    def upsert(self, records: Sequence[Record]) -> None:
        if not records:
            return
        vecs = [as_unit_vectors(r.vector, self.dim)[0] for r in records]  # checks every row before any write
        latest = {r.id: (v, r) for r, v in zip(records, vecs)}  # the same id twice: the last one wins
        new_rows: list[tuple[str, np.ndarray, dict[str, Any]]] = []
        for rid, (v, r) in latest.items():
            if rid in self._pos:
                i = self._pos[rid]
                self._vecs[i] = v
                self._meta[i] = dict(r.metadata)
            else:
                self._pos[rid] = len(self._ids) + len(new_rows)
                new_rows.append((rid, v, dict(r.metadata)))
        if new_rows:
            self._ids.extend(r[0] for r in new_rows)
            self._meta.extend(r[2] for r in new_rows)
            self._vecs = np.concatenate([self._vecs, np.stack([r[1] for r in new_rows])])

    def delete(self, ids: Iterable[str]) -> int:
        gone = {i for i in ids if i in self._pos}
        if not gone:
            return 0
        keep = [k for k, i in enumerate(self._ids) if i not in gone]
        self._ids = [self._ids[k] for k in keep]
        self._meta = [self._meta[k] for k in keep]
        self._vecs = self._vecs[keep]
        self._pos = {i: k for k, i in enumerate(self._ids)}
        return len(gone)

    def get(self, ids: Sequence[str]) -> list[Record | None]:
        out: list[Record | None] = []
        for i in ids:
            k = self._pos.get(i)
            out.append(None if k is None else Record(i, self._vecs[k].copy(), dict(self._meta[k])))
        return out

    def _mask(self, where: Sequence[Condition]) -> np.ndarray | None:
        if not where:
            return None
        filters.check_fields(where, self.fields())
        return np.fromiter((filters.matches(m, where) for m in self._meta), dtype=bool, count=len(self._meta))

    def count(self, where: Sequence[Condition] = ()) -> int:
        mask = self._mask(where)
        return len(self._ids) if mask is None else int(mask.sum())

    def search(
        self,
        vector: np.ndarray,
        limit: int = 10,
        where: Sequence[Condition] = (),
        min_cosine: float | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        q = as_unit_vectors(vector, self.dim)[0]
        mask = self._mask(where)
        scores = cosines(self._vecs, q)
        rows = np.arange(len(self._ids)) if mask is None else np.nonzero(mask)[0]
        for e in exclude:
            k = self._pos.get(e)
            if k is not None:
                rows = rows[rows != k]
        rows, top = top_candidates(rows, scores[rows], limit, min_cosine)
        pairs = sorted(
            ((self._ids[k], float(c)) for k, c in zip(rows.tolist(), top.tolist())), key=lambda p: (-p[1], p[0])
        )
        return [Hit(i, c, dict(self._meta[self._pos[i]]), score=c) for i, c in pairs[:limit]]

    def fields(self) -> list[str]:
        seen: set[str] = set()
        for m in self._meta:
            seen.update(m)
        return sorted(seen)

    def ids(self, where: Sequence[Condition] = ()) -> list[str]:
        mask = self._mask(where)
        return list(self._ids) if mask is None else [i for i, m in zip(self._ids, mask) if m]
