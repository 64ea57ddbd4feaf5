"""Near-duplicate groups in a collection: ``clipseek dedup``.

Each record's own stored vector is searched with the store's own search
(:meth:`~clipseek.stores.base.VectorStore.neighbours`: many queries per call; HNSW on large local
collections, exact below ``exact_below``), keeping the ``neighbours`` nearest other records with
cosine >= the threshold; those pairs are joined with union-find into groups. So the cost is one
k-NN query per record, never an O(n^2) pass over pairs. A group is connected by such pairs
(single linkage): two members may be less similar to each other than the threshold, which is why
every member's cosine to the group's first member is reported.

Identical vectors tie at cosine 1. An exact search orders ties by id, so every copy of a
many-times copied image finds the same few lowest ids and all copies end up in one group even with
a small ``neighbours``; the graph search returns some ``neighbours`` of the copies for each, which
joins them in practice but is not guaranteed: raise ``neighbours`` for very large copy sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ClipseekError
from .stores.base import VectorStore


@dataclass
class Member:
    id: str
    cosine: float  # to the group's first member (1.0 for that one)
    path: str | None


@dataclass
class Group:
    """Records whose vectors are near each other; ``members[0]`` is the lowest id."""

    members: list[Member]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": len(self.members),
            "members": [{"id": m.id, "cosine": round(m.cosine, 6), "path": m.path} for m in self.members],
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while (p := self.parent.get(root, root)) != root:
            root = p
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def near_duplicates(
    store: VectorStore,
    threshold: float,
    *,
    neighbours: int = 10,
    chunk: int = 1024,
    on_progress: Callable[[int], None] | None = None,
) -> list[Group]:
    """Groups of at least two records joined by pairs with cosine >= ``threshold``, largest
    first (then by first id)."""
    if not -1 <= threshold <= 1:
        raise ClipseekError(f"--threshold is a cosine between -1 and 1, got {threshold}")
    if neighbours < 1:
        raise ClipseekError(f"neighbours must be at least 1, got {neighbours}")
    uf = _UnionFind()
    ids = sorted(store.ids())
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        for rid, near in zip(part, store.neighbours(part, neighbours, min_cosine=threshold)):
            for other, _cos in near:
                uf.union(rid, other)
        if on_progress:
            on_progress(min(chunk, len(ids) - i))
    members: dict[str, list[str]] = {}
    for x in uf.parent:
        members.setdefault(uf.find(x), []).append(x)
    groups = [g for root, m in members.items() if (g := _group(store, sorted(set(m) | {root}))) is not None]
    groups.sort(key=lambda g: (-len(g.members), g.members[0].id))
    return groups


def _group(store: VectorStore, ids: list[str]) -> Group | None:
    recs = [r for r in store.get(ids) if r is not None]
    if len(recs) < 2:
        return None  # deleted meanwhile
    first = np.asarray(recs[0].vector, dtype=np.float32)
    return Group(
        [
            Member(r.id, float(np.dot(first, np.asarray(r.vector, dtype=np.float32))), _path(r.metadata))
            for r in recs
        ]
    )


def _path(meta: dict[str, Any]) -> str | None:
    p = meta.get("path")
    return str(p) if p is not None else None
