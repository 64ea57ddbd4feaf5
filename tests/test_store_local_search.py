"""The local store's search routing beyond the contract: when it asks the hnswlib graph (and for
how many candidates, with which ef), when it scans exactly, and how it falls back when the
graph answers short. A spy wraps the loaded graph and records every query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipseek import filters
from clipseek.errors import BadVector
from clipseek.stores.local import LocalStore
from clipseek.types import Record

DIM = 16


class SpyIndex:
    """Delegates to the real graph; records (k, ef, filtered) per knn_query and the query. ``drop``
    labels are removed from its answers, ``extra`` labels appended to them (as a graph that
    ignored its filter or a deleted mark would), and ``fail`` makes it raise as hnswlib does
    when k is unreachable."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.ef: int | None = None
        self.calls: list[tuple[int, int | None, bool]] = []
        self.queries: list[np.ndarray] = []
        self.drop: set[int] = set()
        self.extra: list[int] = []
        self.fail = False

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self._index.set_ef(ef)

    def knn_query(self, q: np.ndarray, k: int, num_threads: int, filter: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: A002
        self.calls.append((k, self.ef, filter is not None))
        self.queries.append(np.asarray(q))
        if self.fail:
            raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")
        labels, _dist = self._index.knn_query(q, k=k, num_threads=num_threads, filter=filter)
        out = [int(x) for x in labels[0] if int(x) not in self.drop] + self.extra
        return np.array([out], dtype=np.uint64), np.zeros((1, len(out)), np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def exact(vecs: np.ndarray, ids: list[str], q: np.ndarray, limit: int) -> list[str]:
    """The reference: cosine descending, ties by id."""
    s = unit(vecs) @ unit(q)
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-s[i], ids[i]))[:limit]]


def tag(i: int) -> str:
    return "a" if i % 16 == 0 else "b" if i in (1, 2) else "c"


def spied(tmp_path: Path, n: int, **options: Any) -> tuple[LocalStore, SpyIndex, np.ndarray, list[str]]:
    """A store of n random records (id r{i:04d}; tag "a" for i % 16 == 0, "b" for i in (1, 2),
    else "c"), searched on the graph (exact_below=0), its graph loaded and spied on."""
    x = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    ids = [f"r{i:04d}" for i in range(n)]
    st = LocalStore(tmp_path / "s", DIM, exact_below=0, **options)
    st.upsert([Record(ids[i], x[i], {"tag": tag(i)}) for i in range(n)])
    st.search(x[0], 1)  # loads the graph
    spy = SpyIndex(st._ann.index)
    st._ann.index = spy
    return st, spy, x, ids


def where(t: str) -> list[filters.Condition]:
    return filters.parse({"tag": t})


def test_unfiltered_graph_search_asks_for_limit_plus_two(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 512, ef_search=64)
    with st:
        q = x[7] + x[9]
        assert [h.id for h in st.search(q, 5)] == exact(x, ids, q, 5)
        top2 = exact(x, ids, q, 2)
        others = [i for i in ids if i not in top2]
        hits = st.search(q, 5, exclude=top2)  # the excluded are asked for on top: 5 + 2 + 2
        assert [h.id for h in hits] == exact(x[[ids.index(i) for i in others]], others, q, 5)
        assert spy.calls == [(7, 64, False), (9, 64, False)]
        np.testing.assert_allclose(spy.queries[0].reshape(-1), unit(q), atol=1e-6)
        # min_cosine applies to the graph's candidates: only x[7] itself is within 0.6 of x[7]
        s7 = unit(x) @ unit(x[7])
        assert sorted(s7)[-2] < 0.6
        assert [h.id for h in st.search(x[7], 5, min_cosine=0.6)] == ["r0007"]


def test_graph_candidates_are_checked_against_the_filter_liveness_and_exclusions(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 512, ef_search=64, filtered_exact_fraction=0.0)
    with st:
        st.delete(["r0005"])
        q = x[16]
        a = [i for i in range(512) if tag(i) == "a" and i != 16]
        # the graph also hands back r0003 (tag "c"), the deleted r0005 and the excluded r0016
        spy.extra = [3, 5, 16]
        hits = st.search(q, 5, where=where("a"), exclude=["r0016"])
        assert [h.id for h in hits] == exact(x[a], [ids[i] for i in a], q, 5)
        live = [i for i in range(512) if i not in (5, 16)]
        hits = st.search(q, 5, exclude=["r0016"])  # unfiltered: r0003 may be a hit, r0005 and r0016 not
        assert [h.id for h in hits] == exact(x[live], [ids[i] for i in live], q, 5)


def test_graph_search_of_fewer_records_than_the_limit(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 6, ef_search=64)
    with st:
        hits = st.search(x[0], 10, exclude=["r0003"])  # 5 left: the graph is asked for all 6
        assert [h.id for h in hits] == [i for i in exact(x, ids, x[0], 10) if i != "r0003"]
        assert spy.calls == [(6, 64, False)]


def test_filtered_graph_search_raises_ef_as_the_filter_narrows(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 512, ef_search=1, filtered_exact_fraction=0.0)
    with st:
        a = [i for i in range(512) if tag(i) == "a"]  # 32 of 512
        q = x[100]
        hits = st.search(q, 5, where=where("a"))
        assert [h.id for h in hits] == exact(x[a], [ids[i] for i in a], q, 5)
        hits = st.search(q, 5, where=where("b"))
        assert [h.id for h in hits] == exact(x[[1, 2]], ["r0001", "r0002"], q, 5)
        assert len(st.search(q, 5, where=where("c"))) == 5
        # k = min(matches, limit + 2); ef = max(ef_search, 4 * limit, k, min(limit / selectivity, 1000))
        assert spy.calls == [
            (7, 80, True),  # 32/512 match: 5 * 16
            (2, 1000, True),  # 2/512 match: 5 * 256, capped at 1000
            (7, 20, True),  # 478/512 match: 4 * limit
        ]


def test_a_short_filtered_graph_answer_is_replaced_by_the_exact_scan(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 512, ef_search=64, filtered_exact_fraction=0.0)
    with st:
        a = [i for i in range(512) if tag(i) == "a"]
        ref = exact(x[a], [ids[i] for i in a], x[0], 5)
        spy.drop = set(a[2:])  # the graph finds only 2 of the 5 it must
        assert [h.id for h in st.search(x[0], 5, where=where("a"))] == ref
        # a complete graph answer (5 of 5, here without the true best two) is final
        best = [ids.index(i) for i in exact(x[a], [ids[i] for i in a], x[0], 2)]
        spy.drop = set(best)
        rest = [i for i in a if i not in best]
        assert [h.id for h in st.search(x[0], 5, where=where("a"))] == exact(x[rest], [ids[i] for i in rest], x[0], 5)
        spy.drop = set()
        spy.fail = True  # hnswlib cannot reach k: the exact scan answers, filtered or not
        assert [h.id for h in st.search(x[0], 5, where=where("a"))] == ref
        assert [h.id for h in st.search(x[0], 5)] == exact(x, ids, x[0], 5)
        assert len(st.search(x[0], 5, where=where("c"))) == 5
        # ef_search (64) when it is above every raise: 478/512 match, 4 * limit = 20
        assert spy.calls == [(7, 80, True), (7, 80, True), (7, 80, True), (7, 64, False), (7, 64, True)]


def test_exact_below_and_the_filtered_fraction_choose_the_exact_scan(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((512, DIM)).astype(np.float32)
    # 64 "x", 65 "y" (r0064..r0128), the rest "z"
    recs = [Record(f"r{i:04d}", x[i], {"t": "x" if i < 64 else "y" if i < 129 else "z"}) for i in range(512)]
    with LocalStore(tmp_path / "n", DIM, exact_below=100) as st:
        st.upsert(recs[:99])
        st.search(x[0], 3)
        assert st.stats()["hnsw_loaded"] is False  # 99 < exact_below
        st.upsert(recs[99:100])
        st.search(x[0], 3)
        assert st.stats()["hnsw_loaded"] is True
    # filters keeping at most max(exact_below, 0.125 * 512) = 64 records are scanned exactly
    with LocalStore(tmp_path / "f", DIM, exact_below=10, filtered_exact_fraction=0.125) as st:
        st.upsert(recs)
        st.search(x[0], 3, where=filters.parse({"t": "x"}))
        assert st.stats()["hnsw_loaded"] is False
        st.search(x[0], 3, where=filters.parse({"t": "y"}), exclude=["r0070"])  # 65 - 1 excluded
        assert st.stats()["hnsw_loaded"] is False
        st.search(x[0], 3, where=filters.parse({"t": "y"}))
        assert st.stats()["hnsw_loaded"] is True


def test_search_takes_one_query_vector(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", DIM) as st:
        st.upsert([Record("a", np.ones(DIM), {})])
        with pytest.raises(BadVector, match="search takes one query vector, got 2"):
            st.search(np.ones((2, DIM)), 1)


def test_records_written_after_the_graph_loaded_are_found_on_it(tmp_path: Path) -> None:
    st, spy, x, ids = spied(tmp_path, 300, ef_search=64)
    with st:
        y = unit(np.random.default_rng(9).standard_normal((10, DIM)))
        st.upsert([Record(f"n{i}", y[i], {"tag": "new"}) for i in range(10)])
        st.upsert([Record("r0004", -x[4], {"tag": "moved"})])  # a replaced record moves on the graph too
        for i in (0, 5, 9):
            assert st.search(y[i], 1)[0].id == f"n{i}"
        assert st.search(-x[4], 1)[0].id == "r0004"
        assert "r0004" not in [h.id for h in st.search(x[4], 3)]
        assert len(spy.calls) == 5 and not any(f for _k, _ef, f in spy.calls)  # all on the graph
