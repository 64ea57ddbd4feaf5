"""The VectorStore contract, checked for every registered store against an exact numpy reference
and a plain filter evaluator written here from the semantics in filters.py's docstring (not
:func:`clipseek.filters.matches`, which is itself under test); plus the local store's own promises (HNSW recall, filtered
HNSW, crash safety, rebuilding a stale index)."""

from __future__ import annotations

import json
import math
import operator
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipseek import filters
from clipseek.errors import BadFilter, BadVector, ClipseekError
from clipseek.stores.base import VectorStore
from clipseek.types import Record

DIM = 32


def _registered_stores() -> dict[str, type]:
    try:
        from clipseek.plugins import get_registry

        return dict(get_registry().stores)
    except ImportError:
        # The registry also imports the built-in encoders; while one of them cannot be imported
        # (e.g. its optional packages are missing) collect the stores through the same hooks.
        import pluggy

        from clipseek import default_plugins, hookspecs

        pm = pluggy.PluginManager("clipseek")
        pm.add_hookspecs(hookspecs)
        pm.register(default_plugins, name="clipseek.default_plugins")
        pm.load_setuptools_entrypoints("clipseek")
        stores: dict[str, type] = {}
        pm.hook.register_stores(register=lambda cls: stores.__setitem__(cls.name, cls))
        return stores


STORES = _registered_stores()
PERSISTENT = sorted(n for n, c in STORES.items() if c.persistent)


@pytest.fixture(params=sorted(STORES))
def store_cls(request: pytest.FixtureRequest) -> type:
    return STORES[request.param]


@pytest.fixture
def make(tmp_path: Path, store_cls: type) -> Iterator[Callable[..., VectorStore]]:
    """make(dim=DIM, name='s', **options) -> an open store of the class under test (closed at teardown)."""
    opened: list[VectorStore] = []

    def _make(dim: int = DIM, name: str = "s", **options: Any) -> VectorStore:
        path = tmp_path / name if store_cls.persistent else None
        st = store_cls(path, dim, **options)
        opened.append(st)
        return st

    yield _make
    for st in opened:
        st.close()


# ------------------------------------------------------------------------------------- reference


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(
    n: int, dim: int, seed: int = 0, clusters: int = 50, spread: float = 0.35, centers_seed: int = 0
) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (the same centres for the same centers_seed)."""
    centers = unit(np.random.default_rng(centers_seed).standard_normal((clusters, dim)))
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return unit(x)


def _ref_time(s: str) -> float | None:
    """UTC seconds of an ISO-8601 date or date-time (naive means UTC), else None."""
    s = s.strip()
    if not re.match(r"\d{4}-\d{2}-\d{2}", s):
        return None
    try:
        d = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)
    except ValueError:
        return None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()


def _ref_forms(v: Any) -> tuple[str | None, float | None, float | None] | None:
    """(text, number, time) of one scalar, or None when it can never match."""
    if v is None:
        return None
    if v is True or v is False:
        return ("true" if v else "false", None, None)
    if isinstance(v, (int, float)):
        return (None, float(v), None) if math.isfinite(v) else None
    if isinstance(v, (datetime, date)):
        v = v.isoformat()
    if not isinstance(v, str):
        return None
    try:
        num: float | None = float(v)
    except ValueError:
        num = None
    if num is not None and not math.isfinite(num):
        num = None
    return (v, num, None if num is not None else _ref_time(v))


_REF_CMP = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def ref_matches(metadata: dict[str, Any], conds: Any) -> bool:
    """Every condition holds for some element of the field's value (a scalar is a one-element list)."""
    for c in conds:
        value = metadata.get(c.field)
        have = [f for f in map(_ref_forms, value if isinstance(value, (list, tuple)) else [value]) if f]
        if c.op in ("eq", "in"):
            want = [f for f in map(_ref_forms, c.value if c.op == "in" else [c.value]) if f]
            ok = any((a[0] is not None and a[0] == b[0]) or (a[1] is not None and a[1] == b[1]) for a in have for b in want)
        else:
            bound = _ref_forms(c.value)
            assert bound is not None
            slot = 1 if bound[1] is not None else 2
            ok = any(a[slot] is not None and _REF_CMP[c.op](a[slot], bound[slot]) for a in have)
        if not ok:
            return False
    return True


class Reference:
    """The exact answer: a cosine scan over all records, ties by id, filtered by ref_matches."""

    def __init__(self, records: list[Record]) -> None:
        self.ids = [r.id for r in records]
        self.vecs = unit(np.stack([r.vector for r in records]))
        self.meta = [r.metadata for r in records]

        self._masks: dict[str, np.ndarray] = {}

    def mask(self, where) -> np.ndarray:  # type: ignore[no-untyped-def]
        key = repr(where)
        if key not in self._masks:
            self._masks[key] = np.array([ref_matches(m, where) for m in self.meta], dtype=bool)
        return self._masks[key]

    def search(self, q, limit=10, where=(), min_cosine=None, exclude=()):  # type: ignore[no-untyped-def]
        s = self.vecs @ unit(q)
        keep = self.mask(where) if where else np.ones(len(s), dtype=bool)
        if min_cosine is not None:
            keep = keep & (s >= min_cosine)
        cand = np.nonzero(keep)[0]
        if len(cand) > limit + 50:  # everything that can reach the top ``limit``, ties included
            cut = np.partition(s[cand], len(cand) - limit)[len(cand) - limit]
            cand = cand[s[cand] >= cut]
        out = [(self.ids[i], float(s[i])) for i in cand if self.ids[i] not in exclude]
        if len(out) < limit and len(cand) < int(keep.sum()):
            out = [(self.ids[i], float(s[i])) for i in np.nonzero(keep)[0] if self.ids[i] not in exclude]
        out.sort(key=lambda p: (-p[1], p[0]))
        return out[:limit]

    def matching(self, where) -> set[str]:  # type: ignore[no-untyped-def]
        return {self.ids[i] for i in np.nonzero(self.mask(where))[0]}


def assert_same(hits, ref, tol: float = 1e-5) -> None:  # type: ignore[no-untyped-def]
    assert [h.id for h in hits] == [i for i, _ in ref]
    for h, (_, c) in zip(hits, ref):
        assert abs(h.cosine - c) <= tol
        assert h.score == pytest.approx(h.cosine)


def random_records(n: int, dim: int = DIM, seed: int = 0, prefix: str = "r") -> list[Record]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return [Record(f"{prefix}{i:05d}", x[i], {"i": i, "camera": f"cam-{i % 10}"}) for i in range(n)]


# ------------------------------------------------------------------------------------- basics


def test_upsert_get_count_delete(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    assert st.count() == 0 and list(st.ids()) == [] and st.fields() == []
    assert st.search(np.ones(DIM)) == []
    recs = random_records(50)
    st.upsert(recs[:30])
    st.upsert(recs[30:])
    st.upsert([])
    assert st.count() == 50
    assert sorted(st.ids()) == sorted(r.id for r in recs)
    got = st.get(["r00003", "missing", "r00049"])
    assert got[1] is None
    assert got[0].id == "r00003" and got[0].metadata == {"i": 3, "camera": "cam-3"}
    np.testing.assert_allclose(got[0].vector, unit(recs[3].vector), atol=1e-6)
    assert got[0].vector.dtype == np.float32 and got[0].vector.shape == (DIM,)
    assert st.fields() == ["camera", "i"]
    assert st.delete(["r00003", "r00004", "nope"]) == 2
    assert st.delete(["r00003"]) == 0
    assert st.count() == 48
    assert st.get(["r00003"]) == [None]
    assert "r00003" not in set(st.ids())
    q = recs[3].vector
    assert "r00003" not in [h.id for h in st.search(q, limit=48)]
    assert st.stats()["count"] == 48


def test_delete_reaches_filters_and_search(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(20)
    st.upsert(recs)
    cam3 = filters.parse({"camera": "cam-3"})
    assert st.count(cam3) == 2  # r00003, r00013 (and the filter is warm now)
    assert st.delete([]) == 0
    assert st.delete(["r00003", "r00003"]) == 1
    assert st.count(cam3) == 1 and list(st.ids(cam3)) == ["r00013"]
    assert [h.id for h in st.search(recs[3].vector, 5, where=cam3)] == ["r00013"]
    hits = st.search(recs[3].vector, limit=19)  # every record that is left, the deleted one not
    assert sorted(h.id for h in hits) == sorted(r.id for r in recs if r.id != "r00003")


def test_upsert_replaces_vector_and_metadata(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(20)
    st.upsert(recs)
    new_vec = -recs[0].vector
    st.upsert([Record("r00000", new_vec, {"other": "x"})])
    assert st.count() == 20
    rec = st.get(["r00000"])[0]
    assert rec.metadata == {"other": "x"}
    np.testing.assert_allclose(rec.vector, unit(new_vec), atol=1e-6)
    assert st.search(new_vec, limit=1)[0].id == "r00000"
    assert "r00000" not in [h.id for h in st.search(recs[0].vector, limit=5)]
    assert st.count(filters.parse({"other": "x"})) == 1
    assert st.count(filters.parse({"camera": "cam-0"})) == 1  # r00010 only
    # a field no record has any more is unknown again
    st.upsert([Record("r00000", new_vec, {})])
    assert "other" not in st.fields()
    with pytest.raises(BadFilter):
        st.count(filters.parse({"other": "x"}))


def test_repeated_id_in_one_call_last_wins(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    a, b = np.eye(DIM, dtype=np.float32)[:2]
    st.upsert([Record("x", a, {"v": 1}), Record("x", b, {"v": 2})])
    assert st.count() == 1
    rec = st.get(["x"])[0]
    assert rec.metadata == {"v": 2}
    np.testing.assert_allclose(rec.vector, b)


def test_search_equals_exact_reference(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(2000, seed=1)
    st.upsert(recs)
    ref = Reference(recs)
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = rng.standard_normal(DIM)
        assert_same(st.search(q, limit=10), ref.search(q, 10))
    q = rng.standard_normal(DIM).astype(np.float64)  # any float dtype, 1-D or (1, dim)
    assert_same(st.search(q[None, :], limit=7), ref.search(q, 7))


def test_limit(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(30)
    st.upsert(recs)
    q = recs[0].vector
    assert st.search(q, limit=0) == []
    assert len(st.search(q, limit=1)) == 1
    assert_same(st.search(q, limit=100), Reference(recs).search(q, 100))


def test_limit_defaults_to_10(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(30)
    st.upsert(recs)
    q = recs[0].vector
    hits = st.search(q)  # VectorStore.search's default limit
    assert len(hits) == 10
    assert_same(hits, Reference(recs).search(q, 10))


def test_min_cosine(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(500, seed=3)
    st.upsert(recs)
    ref = Reference(recs)
    q = recs[7].vector + 0.5 * recs[8].vector
    for mc in (0.9, 0.3, 0.1, -1.0):
        hits = st.search(q, limit=50, min_cosine=mc)
        assert all(h.cosine >= mc for h in hits)
        assert_same(hits, ref.search(q, 50, min_cosine=mc))
    assert st.search(q, limit=10, min_cosine=1.01) == []


def test_exclude(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(300, seed=4)
    st.upsert(recs)
    ref = Reference(recs)
    q = recs[5].vector
    top = [h.id for h in st.search(q, limit=5)]
    assert top[0] == "r00005"
    excl = set(top[:3]) | {"unknown-id"}
    hits = st.search(q, limit=5, exclude=excl)
    assert not excl & {h.id for h in hits}
    assert_same(hits, ref.search(q, 5, exclude=excl))
    # a generator works too
    assert_same(st.search(q, limit=5, exclude=(i for i in excl)), ref.search(q, 5, exclude=excl))


def test_ties_are_broken_by_id(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    e = np.eye(DIM, dtype=np.float32)
    ids = ["b", "a", "d", "c", "e"]
    st.upsert([Record(i, e[0], {}) for i in ids] + [Record("z", e[1], {})])
    hits = st.search(e[0], limit=3)
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert all(h.cosine == pytest.approx(1.0) for h in hits)
    assert [h.id for h in st.search(e[0], limit=10)] == ["a", "b", "c", "d", "e", "z"]


def test_wrong_dimension(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    st.upsert(random_records(5))
    with pytest.raises(BadVector):
        st.upsert([Record("x", np.ones(DIM + 1, dtype=np.float32), {})])
    with pytest.raises(BadVector):
        st.upsert([Record("x", np.zeros(DIM), {})])
    with pytest.raises(BadVector):
        st.upsert([Record("x", np.full(DIM, np.nan), {})])
    with pytest.raises(BadVector):
        st.search(np.ones(DIM + 3))
    assert st.count() == 5  # a refused call writes nothing
    assert st.get(["y"]) == [None]


@pytest.mark.parametrize("dim", [0, -3])
def test_a_dimension_below_one_is_refused_before_anything_is_created(make, tmp_path: Path, dim: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadVector, match=f"dimension must be positive, got {dim}"):
        make(dim=dim, name="bad")
    assert not (tmp_path / "bad").exists()  # no directory, no files, nothing on a server's side recorded here


def test_wrong_dimension_inside_a_batch(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    with pytest.raises(BadVector):
        st.upsert([Record("y", np.ones(DIM), {}), Record("x", np.ones(DIM - 1), {})])
    assert st.count() == 0


# ------------------------------------------------------------------------------------- the shared top-k cut

# five keys with known scores: 11 and 13 tie for the best
TOPK_SCORE = {10: 0.1, 11: 0.9, 12: 0.5, 13: 0.9, 14: 0.3}


@pytest.mark.parametrize(
    ("limit", "min_cosine", "keys"),
    [
        (1, None, [11, 13]),  # every candidate tied at the cut is kept
        (2, None, [11, 13]),
        (3, None, [11, 12, 13]),
        (4, None, [11, 12, 13, 14]),
        (5, None, [10, 11, 12, 13, 14]),
        (6, None, [10, 11, 12, 13, 14]),
        (0, None, []),
        (-1, None, []),
        (10, 0.5, [11, 12, 13]),  # min_cosine is inclusive
        (1, 0.5, [11, 13]),
        (2, 0.3, [11, 13]),
        (5, 0.95, []),
    ],
)
def test_top_candidates(limit: int, min_cosine: float | None, keys: list[int]) -> None:
    """The cut both stores' scans and the local store's graph search use, in key order."""
    from clipseek.stores.topk import top_candidates

    got_keys, got_scores = top_candidates(
        np.array(list(TOPK_SCORE)), np.array(list(TOPK_SCORE.values())), limit, min_cosine
    )
    assert got_keys.tolist() == keys
    assert got_scores.tolist() == [TOPK_SCORE[k] for k in keys]


def test_top_candidates_cut_a_long_list() -> None:
    """1000 distinct scores k/1000 in random order: the cut keeps exactly the ``limit`` best
    (the partial sort only orders a short list fully)."""
    from clipseek.stores.topk import top_candidates

    scores = np.random.default_rng(0).permutation(1000) / 1000
    for limit in (1, 2, 10, 500, 999):
        keys, got = top_candidates(np.arange(1000), scores, limit, None)
        assert sorted(got.tolist(), reverse=True) == [(999 - j) / 1000 for j in range(limit)]
        assert got.tolist() == scores[keys].tolist()


def test_top_candidates_of_nothing() -> None:
    from clipseek.stores.topk import top_candidates

    got_keys, got_scores = top_candidates(np.zeros(0, np.int64), np.zeros(0), 3, 0.5)
    assert got_keys.tolist() == [] and got_scores.tolist() == []


# ------------------------------------------------------------------------------------- filters

FILTER_CASES = [
    {"camera": "cam-3"},
    {"camera": {"in": ["cam-1", "cam-2", "nope"]}},
    {"camera": {"in": ["nope", "cam-5"]}},  # only a later value of the list matches
    "camera in nope,cam-6",
    "camera in 'nope', \"cam-2\"",  # CLI quotes are dropped
    {"year": {"in": ["1999", 2021]}},
    {"labels": {"in": ["nope", "person"]}},
    {"camera": ["cam-4", "cam-5"]},
    {"year": 2024},  # int 2024 and string "2024" both
    {"year": "2024"},
    {"year": 2024.0},
    {"year": {"gte": 2023}},
    {"year": {"lt": "2022"}},
    {"year": {"gt": 2023}},  # records equal to the bound: in for gte/lte, out for gt/lt
    {"year": {"lte": "2022"}},
    {"speed": {"gt": 42}},
    {"speed": {"lte": 42}},
    {"labels": {"in": ["dog", 3]}},  # a text and a number in one list: either matches
    {"speed": {"gt": 50}},
    {"speed": {"gte": 50, "lte": 75.5}},
    {"speed": {"lt": "10"}},
    {"speed": 42},
    {"taken": {"gte": "2024-05-01", "lt": "2024-05-02T12:00:00"}},
    {"taken": {"gt": "2024-05-01T10:00:00Z"}},
    {"taken": {"lte": "2024-05-01T09:30:00+02:00"}},
    {"taken": {"gte": "2024-05-03"}},
    {"taken": "2024-05-01"},  # string equality only
    {"labels": "car"},
    {"labels": {"in": ["dog", "tree"]}},
    {"labels": 3},
    {"flag": True},
    {"flag": "false"},
    {"note": "x"},  # present on few records, None on others
    {"nested": "x"},  # a dict value is stored, never matches
    {"camera": "cam-3", "speed": {"gt": 20}},  # AND
    {"camera": {"in": ["cam-1", "cam-3"]}, "labels": "car", "taken": {"lt": "2024-05-03T00:00:00Z"}},
    ["camera=cam-7", "speed<=30"],  # CLI spellings
    "camera in cam-8,cam-9",
    "year>=2025",
]


def filter_records(n: int = 1200, seed: int = 5) -> list[Record]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    base = datetime(2024, 4, 29, tzinfo=timezone.utc).timestamp()
    out = []
    for i in range(n):
        md: dict[str, Any] = {"camera": f"cam-{i % 10}"}
        y = 2020 + (i % 7)
        md["year"] = str(y) if i % 3 == 0 else y
        if i % 5:
            md["speed"] = None if i % 11 == 0 else round(float(rng.uniform(0, 100)), 1)
        if i % 13 == 0:
            md["speed"] = 42
        t = base + float(rng.uniform(0, 6 * 86400))
        iso = datetime.fromtimestamp(t, tz=timezone.utc)
        form = i % 4
        if form == 0:
            md["taken"] = iso.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif form == 1:
            md["taken"] = iso.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
        elif form == 2:
            md["taken"] = iso.date().isoformat()
        else:
            md["taken"] = iso.isoformat()  # +00:00
        labels = [w for k, w in enumerate(["car", "dog", "tree", "person"]) if (i >> k) & 1]
        if i % 17 == 0:
            labels.append(3)
        if i % 9:
            md["labels"] = labels
        md["flag"] = bool(i % 2)
        if i % 50 == 0:
            md["note"] = "x"
        elif i % 50 == 1:
            md["note"] = None
        if i % 7 == 0:
            md["nested"] = {"a": 1}
        out.append(Record(f"f{i:05d}", x[i], md))
    return out


@pytest.fixture
def filtered_store(make):  # type: ignore[no-untyped-def]
    recs = filter_records()
    st = make()
    st.upsert(recs[:700])
    st.upsert(recs[700:])
    return st, Reference(recs)


# ids without backslashes: pytest (and mutmut, which reruns tests by id) cannot select an id holding \"
@pytest.mark.parametrize("where", FILTER_CASES, ids=[json.dumps(w).replace('\\"', "'") for w in FILTER_CASES])
def test_filter_semantics(filtered_store, where) -> None:  # type: ignore[no-untyped-def]
    st, ref = filtered_store
    conds = filters.parse(where)
    expected = ref.matching(conds)
    assert st.count(conds) == len(expected)
    assert set(st.ids(conds)) == expected and len(list(st.ids(conds))) == len(expected)
    hits = st.search(np.ones(DIM), limit=len(ref.ids), where=conds)
    assert {h.id for h in hits} == expected
    assert all(ref_matches(h.metadata, conds) for h in hits)
    rng = np.random.default_rng(len(expected))
    for _ in range(3):
        q = rng.standard_normal(DIM)
        assert_same(st.search(q, limit=10, where=conds), ref.search(q, 10, where=conds))


def test_exclude_with_a_filter(filtered_store) -> None:  # type: ignore[no-untyped-def]
    st, ref = filtered_store
    conds = filters.parse({"camera": "cam-3"})  # 120 of 1200
    q = np.random.default_rng(21).standard_normal(DIM)
    top = [i for i, _ in ref.search(q, 2, where=conds)]
    excl = set(top) | {"f00004"}  # f00004 is cam-4: excluding it changes nothing
    hits = st.search(q, 5, where=conds, exclude=excl)
    assert len(hits) == 5 and not excl & {h.id for h in hits}
    assert_same(hits, ref.search(q, 5, where=conds, exclude=excl))


def test_filter_with_datetime_metadata(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    e = np.eye(DIM, dtype=np.float32)
    st.upsert(
        [
            Record("a", e[0], {"taken": datetime(2024, 5, 1, 12, tzinfo=timezone.utc)}),
            Record("b", e[1], {"taken": datetime(2024, 5, 3, tzinfo=timezone.utc)}),
        ]
    )
    assert [h.id for h in st.search(e[0], where=filters.parse({"taken": {"lt": "2024-05-02"}}))] == ["a"]


def test_unknown_field_is_bad_filter(filtered_store) -> None:  # type: ignore[no-untyped-def]
    st, _ = filtered_store
    with pytest.raises(BadFilter, match="camra"):
        st.search(np.ones(DIM), where=filters.parse({"camra": "cam-1"}))
    with pytest.raises(BadFilter, match="camra"):
        st.count(filters.parse({"camra": "cam-1"}))


def test_unusable_bounds_are_bad_filters(filtered_store) -> None:  # type: ignore[no-untyped-def]
    st, _ = filtered_store
    for cond in (
        filters.Condition("speed", "gt", "fast"),
        filters.Condition("speed", "eq", None),
        filters.Condition("camera", "in", ()),
    ):
        with pytest.raises(BadFilter):
            st.search(np.ones(DIM), where=[cond])


def test_selective_filter_is_exact(make) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(6)
    x = clustered(4000, DIM, seed=6)
    recs = [Record(f"s{i:05d}", x[i], {"rare": "yes" if i % 150 == 7 else "no"}) for i in range(4000)]
    st = make()
    st.upsert(recs)
    ref = Reference(recs)
    conds = filters.parse({"rare": "yes"})
    assert 0 < st.count(conds) < 0.01 * len(recs)
    for _ in range(10):
        q = x[rng.integers(0, 4000)]
        assert_same(st.search(q, limit=10, where=conds), ref.search(q, 10, where=conds))


def test_fingerprints_ids_fields(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    e = np.eye(DIM, dtype=np.float32)
    st.upsert(
        [
            Record("a", e[0], {"_fingerprint": "123:456", "x": 1}),
            Record("b", e[1], {"x": 2}),
            Record("c", e[2], {"_fingerprint": "9:9"}),
        ]
    )
    assert st.fingerprints() == {"a": "123:456", "c": "9:9"}
    assert sorted(st.ids()) == ["a", "b", "c"]
    assert st.fields() == ["_fingerprint", "x"]


def test_values_of_one_key(make) -> None:  # type: ignore[no-untyped-def]
    """``values(key)``: the key's value per record that has it, JSON types kept, odd keys too."""
    st = make()
    e = np.eye(DIM, dtype=np.float32)
    st.upsert(
        [
            Record("a", e[0], {"_sha256": "ab12", "dup": ["/x/1.jpg", "/x/2.jpg"], "odd.key": 1}),
            Record("b", e[1], {"_sha256": "cd34", "dup": [], "n": 2.5}),
            Record("c", e[2], {"x": 1}),
        ]
    )
    assert st.values("_sha256") == {"a": "ab12", "b": "cd34"}
    assert st.values("dup") == {"a": ["/x/1.jpg", "/x/2.jpg"], "b": []}
    assert st.values("n") == {"b": 2.5}
    assert st.values("odd.key") == {"a": 1}
    assert st.values("missing") == {}
    st.delete(["a"])
    assert st.values("_sha256") == {"b": "cd34"}


def test_neighbours_are_each_records_own_search(make) -> None:  # type: ignore[no-untyped-def]
    """``neighbours(ids)`` answers like ``search(own vector, exclude=[id])`` for each id."""
    st = make()
    recs = random_records(300, seed=3)
    recs += [Record(f"copy{i}", recs[0].vector) for i in range(3)]  # ties at cosine 1: broken by id
    st.upsert(recs)
    st.delete(["r00007"])
    ask = ["r00000", "copy1", "r00007", "nope", "r00150"]
    got = st.neighbours(ask, 5, min_cosine=0.1)
    assert got[2] == [] and got[3] == []
    assert got[1][:3] == [("copy0", pytest.approx(1.0)), ("copy2", pytest.approx(1.0)), ("r00000", pytest.approx(1.0))]
    for rid, near in zip(ask, got):
        if rid in ("r00007", "nope"):
            continue
        v = st.get([rid])[0].vector
        want = st.search(v, 5, min_cosine=0.1, exclude=[rid])
        assert [i for i, _c in near] == [h.id for h in want]
        assert [c for _i, c in near] == pytest.approx([h.cosine for h in want], abs=1e-5)


def test_concurrent_searches(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(1000, seed=8)
    st.upsert(recs)
    ref = Reference(recs)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                q = rng.standard_normal(DIM)
                assert_same(st.search(q, limit=5), ref.search(q, 5))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ------------------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("name", PERSISTENT)
def test_persistence(tmp_path: Path, name: str) -> None:
    cls = STORES[name]
    recs = filter_records(600, seed=9)
    recs[5] = Record("f00005", recs[5].vector, {**recs[5].metadata, "_fingerprint": "5:5"})
    moved = Record("f00002", recs[7].vector, {"camera": "moved", "_fingerprint": "2:2"})
    # what the store must hold after the writes below: two deleted, one replaced
    live = [moved if r.id == "f00002" else r for r in recs if r.id not in ("f00000", "f00001")]
    ref = Reference(live)
    st = cls(tmp_path / "p", DIM)
    st.upsert(recs[:400])
    st.upsert(recs[400:])
    st.delete(["f00000", "f00001"])
    st.upsert([moved])
    qs = np.random.default_rng(10).standard_normal((5, DIM))
    qs[0] = recs[7].vector  # f00007 and the moved f00002 tie at the top
    conds = filters.parse({"camera": {"in": ["cam-3", "moved"]}})
    before = [[(h.id, h.cosine, h.metadata) for h in st.search(q, 10, where=w)] for q in qs for w in ((), conds)]
    st.close()
    st.close()  # idempotent
    with cls(tmp_path / "p", DIM) as st2:
        after = [[(h.id, h.cosine, h.metadata) for h in st2.search(q, 10, where=w)] for q in qs for w in ((), conds)]
        assert after == before
        for q in qs:
            assert_same(st2.search(q, 10), ref.search(q, 10))
            assert_same(st2.search(q, 10, where=conds), ref.search(q, 10, where=conds))
        assert [h.id for h in st2.search(recs[7].vector, 2)] == ["f00002", "f00007"]
        assert st2.count() == 598 and st2.count(conds) == len(ref.matching(conds)) == 61  # 60 cam-3, 1 moved
        assert sorted(st2.ids()) == [r.id for r in live]
        assert st2.fields() == ["_fingerprint", "camera", "flag", "labels", "nested", "note", "speed", "taken", "year"]
        assert st2.fingerprints() == {"f00002": "2:2", "f00005": "5:5"}
        assert st2.get(["f00000", "f00001"]) == [None, None]
        got = st2.get([r.id for r in live])
        assert [g.metadata for g in got] == [r.metadata for r in live]
        np.testing.assert_allclose(np.stack([g.vector for g in got]), unit(np.stack([r.vector for r in live])), atol=1e-6)


@pytest.mark.parametrize("name", PERSISTENT)
def test_fields_after_reopen(tmp_path: Path, name: str) -> None:
    """The field counts are durable: a field whose only record was deleted stays unknown."""
    cls = STORES[name]
    e = np.eye(DIM, dtype=np.float32)
    with cls(tmp_path / "p", DIM) as st:
        st.upsert([Record("a", e[0], {"x": 1, "only_a": "y"}), Record("b", e[1], {"x": 2})])
        st.update_metadata({"b": {"only_b": "z"}})
        st.delete(["a"])
    with cls(tmp_path / "p", DIM) as st:
        assert st.fields() == ["only_b", "x"]
        with pytest.raises(BadFilter):
            st.count(filters.parse({"only_a": "y"}))
        st.delete(["b"])
    with cls(tmp_path / "p", DIM) as st:
        assert st.fields() == [] and st.count() == 0


@pytest.mark.parametrize("name", PERSISTENT)
def test_reopen_with_other_dimension_is_refused(tmp_path: Path, name: str) -> None:
    cls = STORES[name]
    with cls(tmp_path / "p", DIM) as st:
        st.upsert(random_records(3))
    with pytest.raises(BadVector, match=str(DIM)):
        cls(tmp_path / "p", DIM * 2)
    with cls(tmp_path / "p", DIM) as st:  # and the failed open left it usable
        assert st.count() == 3


# ------------------------------------------------------------------------------------- update_metadata


def test_update_metadata_merges_keys_and_keeps_vectors(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    recs = random_records(40)
    st.upsert(recs)
    n = st.update_metadata({"r00001": {"camera": "new", "label": "cat"}, "r00002": {"label": "dog"}, "nope": {"x": 1}})
    assert n == 2  # unknown ids are ignored and not counted
    got = {r.id: r for r in st.get(["r00001", "r00002", "r00003"])}
    assert got["r00001"].metadata == {"i": 1, "camera": "new", "label": "cat"}
    assert got["r00002"].metadata == {"i": 2, "camera": "cam-2", "label": "dog"}
    assert got["r00003"].metadata == {"i": 3, "camera": "cam-3"}
    for i in (1, 2):
        np.testing.assert_allclose(got[f"r{i:05d}"].vector, unit(recs[i].vector), atol=1e-6)
    assert st.get(["nope"]) == [None] and st.count() == 40
    # filters and fields see the new values, and no longer the old ones
    assert st.fields() == ["camera", "i", "label"]
    assert sorted(st.ids(filters.parse({"label": "cat"}))) == ["r00001"]
    assert st.count(filters.parse({"camera": "cam-1"})) == 3  # r00011, r00021, r00031
    assert st.count(filters.parse({"camera": "new"})) == 1
    hits = st.search(recs[1].vector, 1, where=filters.parse({"label": "cat"}))
    assert [h.id for h in hits] == ["r00001"] and hits[0].metadata["label"] == "cat"
    assert hits[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert st.update_metadata({}) == 0 and st.update_metadata({"nope": {"a": 1}}) == 0
    assert "a" not in st.fields()


def test_fields_follow_update_metadata_and_delete(make) -> None:  # type: ignore[no-untyped-def]
    """A field stays known while any record has it: two records gain "label" in one call, one
    record's existing "camera" is replaced (still one "camera" per record)."""
    st = make()
    st.upsert(random_records(4))
    assert st.update_metadata({"r00000": {"label": "a"}, "r00001": {"label": "b"}, "r00002": {"camera": "x"}}) == 3
    assert st.fields() == ["camera", "i", "label"]
    st.delete(["r00000"])
    assert st.fields() == ["camera", "i", "label"] and st.count(filters.parse({"label": "b"})) == 1
    st.delete(["r00001"])
    assert st.fields() == ["camera", "i"]
    with pytest.raises(BadFilter):
        st.count(filters.parse({"label": "b"}))
    st.delete(["r00002", "r00003"])
    assert st.fields() == [] and st.count() == 0


def test_update_metadata_is_atomic(make) -> None:  # type: ignore[no-untyped-def]
    st = make()
    st.upsert(random_records(5))
    try:
        st.update_metadata({"r00000": {"tag": "ok"}, "r00001": {"tag": object()}})
    except (TypeError, ValueError, ClipseekError):
        pass  # refused as a whole: nothing changed
    else:
        assert st.count(filters.parse({"tag": "ok"})) == 1  # accepted as a whole
        return
    assert st.get(["r00000"])[0].metadata == {"i": 0, "camera": "cam-0"}
    assert "tag" not in st.fields()


# ------------------------------------------------------------------------------------- local store

needs_local = pytest.mark.skipif("local" not in STORES, reason="local store not registered")


def _local() -> type:
    return STORES["local"]


def _hnsw_setup(tmp_path: Path, n: int = 20_000, dim: int = 64) -> tuple[Any, list[Record], Reference, np.ndarray]:
    x = clustered(n, dim, seed=11, clusters=100)
    cams = np.random.default_rng(12).integers(0, 100, n)
    recs = [
        Record(
            f"h{i:06d}",
            x[i],
            {"camera": f"cam-{cams[i]:02d}", "tenth": int(i % 10 == 0), "rare": i % 250 == 3},
        )
        for i in range(n)
    ]
    st = _local()(tmp_path / "h", dim, exact_below=0)
    for i in range(0, n, 5000):
        st.upsert(recs[i : i + 5000])
    queries = clustered(60, dim, seed=13, clusters=100)
    return st, recs, Reference(recs), queries


@needs_local
def test_local_hnsw_recall_filters_and_reopen(tmp_path: Path) -> None:
    st, recs, ref, queries = _hnsw_setup(tmp_path)
    assert st.stats()["index"] == "hnsw"
    # unfiltered recall@10 on the graph path
    hit = 0
    for q in queries:
        got = {h.id for h in st.search(q, 10)}
        hit += len(got & {i for i, _ in ref.search(q, 10)})
    recall = hit / (10 * len(queries))
    assert recall >= 0.95, recall

    # a 10% filter takes the graph path (filtered_exact_fraction 0.02): every hit matches, and the
    # recall stays high
    conds = filters.parse({"tenth": 1})
    hit = 0
    for q in queries[:30]:
        hits = st.search(q, 10, where=conds)
        assert len(hits) == 10 and all(h.metadata["tenth"] == 1 for h in hits)
        hit += len({h.id for h in hits} & {i for i, _ in ref.search(q, 10, where=conds)})
    assert hit / 300 >= 0.95

    # a 1% filter forced onto the graph path too: matches only, never short
    conds1 = filters.parse({"camera": "cam-07"})
    st.filtered_exact_fraction = 0.0
    try:
        for q in queries[:10]:
            hits = st.search(q, 10, where=conds1)
            assert len(hits) == 10 and all(h.metadata["camera"] == "cam-07" for h in hits)
    finally:
        st.filtered_exact_fraction = 0.02
    # < 1% of rows (0.4%): exact scan even with exact_below=0
    conds2 = filters.parse({"rare": True})
    for q in queries[:10]:
        assert_same(st.search(q, 10, where=conds2), ref.search(q, 10, where=conds2))

    # exclude / min_cosine on the graph path
    q = recs[123].vector
    hits = st.search(q, 5, exclude=["h000123"], min_cosine=0.5)
    assert "h000123" not in {h.id for h in hits} and all(h.cosine >= 0.5 for h in hits)

    before = [[h.id for h in st.search(q, 10)] for q in queries[:10]]
    st.close()
    assert (tmp_path / "h" / "hnsw.bin").exists()
    t0 = time.perf_counter()
    st = _local()(tmp_path / "h", 64, exact_below=0)
    assert time.perf_counter() - t0 < 5
    assert [[h.id for h in st.search(q, 10)] for q in queries[:10]] == before
    assert not st._index_dirty  # loaded from the file, nothing to catch up
    st.close()


@needs_local
def test_local_neighbours_on_the_graph(tmp_path: Path) -> None:
    """The batched graph path finds the exact nearest others (clustered data, high recall)."""
    from clipseek.stores.local import LocalStore

    recs = random_records(2000, seed=5)
    st = LocalStore(tmp_path / "g", DIM, exact_below=0)
    st.upsert(recs)
    ids = [r.id for r in recs]
    X = np.stack([r.vector / np.linalg.norm(r.vector) for r in recs])
    got = st.neighbours(ids[:200], 5)
    hit = 0
    for i, near in enumerate(got):
        s = X @ X[i]
        s[i] = -2
        want = [ids[j] for j in np.argsort(-s)[:5]]
        hit += len(set(want) & {n for n, _c in near})
        assert ids[i] not in {n for n, _c in near}
        for n, c in near:
            assert c == pytest.approx(float(X[ids.index(n)] @ X[i]), abs=1e-5)
    assert hit / (200 * 5) >= 0.95
    st.close()


def test_local_stale_or_missing_index_is_caught_up(tmp_path: Path) -> None:
    n, dim = 3000, 32
    x = clustered(n + 500, dim, seed=14)
    recs = [Record(f"k{i:05d}", x[i], {"g": i % 3}) for i in range(n + 500)]
    path = tmp_path / "k"
    st = _local()(path, dim, exact_below=0)
    st.upsert(recs[:n])
    st.close()
    old_index = (path / "hnsw.bin").read_bytes()

    # more writes while the index is not loaded (no search), then the old file is put back
    st = _local()(path, dim, exact_below=0)
    st.upsert(recs[n:])
    st.delete([f"k{i:05d}" for i in range(200)])
    st.upsert([Record("k00300", -x[300], {"g": 9})])
    st.close()
    live = recs[200:]
    live = [r if r.id != "k00300" else Record("k00300", -x[300], {"g": 9}) for r in live]
    ref = Reference(live)

    def check(st) -> None:  # type: ignore[no-untyped-def]
        assert st.count() == n + 300
        for r in (live[0], live[-1], live[100], recs[n + 7]):
            assert st.search(r.vector, 1)[0].id == r.id
        assert st.search(-x[300], 1)[0].id == "k00300"
        deleted = {f"k{i:05d}" for i in range(200)}
        rng = np.random.default_rng(15)
        hit = 0
        for _ in range(30):
            q = x[rng.integers(0, n)]
            got = [h.id for h in st.search(q, 10)]
            assert not deleted & set(got)
            hit += len(set(got) & {i for i, _ in ref.search(q, 10)})
        assert hit / 300 >= 0.95

    for damage in ("stale", "missing", "garbage", "truncated"):
        if damage == "stale":
            (path / "hnsw.bin").write_bytes(old_index)
        elif damage == "missing":
            (path / "hnsw.bin").unlink()
        elif damage == "garbage":
            (path / "hnsw.bin").write_bytes(os.urandom(5000))
        else:
            (path / "hnsw.bin").write_bytes(old_index[: len(old_index) // 2])
        st = _local()(path, dim, exact_below=0)
        check(st)
        st.close()
    with _local()(path, dim, exact_below=0) as st:  # and the repaired file is good as saved
        check(st)


@needs_local
def test_local_update_metadata_writes_no_vector(tmp_path: Path) -> None:
    path = tmp_path / "um"
    st = _local()(path, DIM, exact_below=0)
    recs = random_records(200)
    st.upsert(recs)
    st.search(recs[0].vector, 3)  # the graph is loaded
    st.flush()
    size, before = (path / "vectors.f32").stat().st_size, st.stats()
    mtime = (path / "vectors.f32").stat().st_mtime_ns
    assert st.update_metadata({r.id: {"labels": ["x", "y"]} for r in recs[:50]}) == 50
    after = st.stats()
    assert after["retired_slots"] == before["retired_slots"] == 0  # same slots: no new slot per record
    assert (path / "vectors.f32").stat().st_size == size and (path / "vectors.f32").stat().st_mtime_ns == mtime
    assert not st._index_dirty  # the graph was not touched
    assert st.count(filters.parse({"labels": "y"})) == 50
    st.close()
    with _local()(path, DIM, read_only=True) as ro:  # durable, and readers see it after reopening
        assert ro.count(filters.parse({"labels": "x"})) == 50 and ro.get(["r00049"])[0].metadata["labels"] == ["x", "y"]


@needs_local
def test_local_refuses_second_open(tmp_path: Path) -> None:
    with _local()(tmp_path / "l", DIM) as st:
        st.upsert(random_records(3))
        with pytest.raises(ClipseekError, match="already open"):
            _local()(tmp_path / "l", DIM)
    with _local()(tmp_path / "l", DIM) as st:
        assert st.count() == 3


CRASH_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from clipseek.stores.local import LocalStore
    from clipseek.types import Record
    path, dim, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    st = LocalStore(path, dim, exact_below=int(sys.argv[4]))
    b = st.count() // batch

    def rec(i, call):
        v = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
        return Record(f"c{i:07d}", v, {"i": i, "call": call, "tag": "t%d" % (i % 5), "pad": "x" * (i % 40)})

    while True:
        recs = [rec(b * batch + j, b) for j in range(batch)]  # 'batch' new ids per call
        if b % 3 == 2:  # and, every third call, re-upserts of half the previous call's ids
            recs += [rec((b - 1) * batch + j, b) for j in range(0, batch, 2)]
        st.upsert(recs)
        b += 1
        if b % 10 == 3:
            st.flush()  # saves the index when there is one: later calls make it stale
            print("ready", flush=True)
    """
)


def expected_call(i: int, batch: int, calls: int) -> int:
    b = i // batch
    if (b + 1) % 3 == 2 and (i % batch) % 2 == 0 and b + 1 < calls:
        return b + 1
    return b


@needs_local
@pytest.mark.parametrize("exact_below", [100_000, 0])
def test_local_survives_sigkill_mid_write(tmp_path: Path, exact_below: int) -> None:
    dim, batch = 48, 40
    path = tmp_path / "crash"
    script = tmp_path / "writer.py"
    script.write_text(CRASH_WRITER)
    for delay in (0.25, 0.6):  # killed twice; the second run resumes the first's store
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(dim), str(batch), str(exact_below)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read()
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        st = _local()(path, dim, exact_below=exact_below)
        try:
            n = st.count()
            calls = n // batch
            assert n == calls * batch and calls >= 3  # a whole number of calls
            ids = sorted(st.ids())
            assert ids == [f"c{i:07d}" for i in range(n)]
            recs = st.get(ids)
            for r in recs:  # complete records, and each from the last call that wrote it
                i = int(r.id[1:])
                want = unit(np.random.default_rng(i).standard_normal(dim))
                np.testing.assert_allclose(r.vector, want, atol=1e-6)
                assert r.metadata == {
                    "i": i,
                    "call": expected_call(i, batch, calls),
                    "tag": f"t{i % 5}",
                    "pad": "x" * (i % 40),
                }
            # search works after the crash (index caught up or rebuilt), filters too
            for probe in (ids[0], ids[len(ids) // 2], ids[-1]):
                v = st.get([probe])[0].vector
                assert st.search(v, 1)[0].id == probe
            assert st.count(filters.parse({"tag": "t3"})) == sum(1 for r in recs if r.metadata["tag"] == "t3")
        finally:
            st.close()


@needs_local
def test_local_read_only_alongside_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    with pytest.raises(ClipseekError, match="no local store"):
        _local()(path, DIM, read_only=True)
    writer = _local()(path, DIM)
    try:
        writer.upsert(random_records(5))
        reader = _local()(path, DIM, read_only=True)  # no 'already open' error: readers take no lock
        try:
            assert reader.count() == 5
            with pytest.raises(ClipseekError, match="open read-only"):
                reader.upsert(random_records(1))
            with pytest.raises(ClipseekError, match="open read-only"):
                reader.delete(["r0"])
            writer.upsert([Record("late", unit(np.ones(DIM)), {})])
            assert reader.count() == 6  # an open reader catches up with the writer's commits
        finally:
            reader.close()
        with _local()(path, DIM, read_only=True) as again:
            assert again.count() == 6 and again.search(np.ones(DIM), 1)[0].id == "late"
    finally:
        writer.close()


@needs_local
def test_local_reader_opens_consistently_while_another_process_writes(tmp_path: Path) -> None:
    dim, batch = 48, 40
    path = tmp_path / "live"
    script = tmp_path / "writer.py"
    script.write_text(CRASH_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(dim), str(batch), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        seen = []
        for _ in range(5):
            with _local()(path, dim, read_only=True, exact_below=0) as st:
                n = st.count()
                assert n % batch == 0 and n >= 3 * batch  # whole calls only
                ids = sorted(st.ids())
                assert len(ids) >= n  # ids() reads the live database: it may already hold more
                probe = f"c{n - 1:07d}"
                v = st.get([probe])[0].vector
                assert st.search(v, 1)[0].id == probe
                seen.append(n)
            time.sleep(0.05)
        assert proc.poll() is None  # the writer was never blocked or stopped by the readers
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
