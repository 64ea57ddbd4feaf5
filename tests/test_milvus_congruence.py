"""Congruence of the Milvus store with the local (embedded) store, and filtered recall on HNSW.

- The shipped photos through the offline model: the same text, Chinese, image and like queries,
  with and without filters, give the same hits in the same order with the same cosines and
  scores (within 1e-5) from a local and a Milvus collection, each with its default settings.
- 100k 512-d vectors with metadata (embedding-like: a 24-dimensional family around a common
  direction, as CLIP vectors are, plus noise): the local store's exact scan and Milvus with an
  exact (FLAT) index give the same ids in the same order and cosines within 1e-5, unfiltered and
  under every filter kind, both equal to an exact numpy scan written here.
- The same collection on Milvus's default HNSW index: recall@10 >= 0.99 against the exact
  filtered scan at 10 %, 1 % and 0.1 % selectivity, on the store's default route and with every
  query forced through the graph (``exact_rows=0``).

Approximate search is approximate: HNSW (in either store) can miss a true neighbour, so identical
answers are asserted where both stores are exact, and recall where the graph answers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import clipseek
from clipseek import filters
from clipseek.stores.milvus import MilvusStore
from clipseek.types import Record

pytestmark = pytest.mark.milvus

N, DIM, RANK = 100_000, 512, 24


def embedding_like(n: int, seed: int) -> np.ndarray:
    """Unit vectors near a 24-d family around a shared direction (mean pairwise cosine about 0.4)."""
    basis = np.random.default_rng(1000).standard_normal((RANK, DIM)).astype(np.float32) / np.sqrt(RANK)
    mean = np.random.default_rng(1001).standard_normal(DIM).astype(np.float32)
    mean *= 0.8 / np.linalg.norm(mean)
    rng = np.random.default_rng(seed)
    x = mean + rng.standard_normal((n, RANK)).astype(np.float32) @ basis
    x += 0.15 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _hits(result_hits: list[Any]) -> list[tuple[str, float]]:
    return [(h.id, h.cosine) for h in result_hits]


def assert_congruent(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    assert max((abs(x - y) for (_, x), (_, y) in zip(a, b)), default=0.0) <= 1e-5


# ------------------------------------------------------------------------------------- the photos


@pytest.mark.model
def test_shipped_photos_through_the_offline_model_answer_alike(tmp_path, milvus_uri, monkeypatch) -> None:
    from clipseek.demo import TEXT_QUERIES, sample_refs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with clipseek.Engine(tmp_path / "data") as eng:
        local = eng.collection("photos", model="offline")
        remote = eng.collection("photos-milvus", model="offline", store="milvus", store_uri=milvus_uri)
        refs = sample_refs()
        assert local.index(refs).added == remote.index(refs).added == len(refs) == 19
        captions = [r.metadata["caption"] for r in refs]
        wheres = [None, {"caption": {"in": captions[::2]}}, {"file_name": {"in": ["chelsea.png", "coffee.png", "rocket.jpg"]}}]
        queries: list[dict[str, Any]] = [{"text": t} for t in [*TEXT_QUERIES, "白色SUV", "a red car"]]
        queries += [{"like": "chelsea"}, {"image": str(refs[3].path)}]
        compared = 0
        for q in queries:
            for w in wheres:
                for top in (3, 19):
                    a = local.search(**q, where=w, top=top)
                    b = remote.search(**q, where=w, top=top)
                    assert_congruent(_hits(a.hits), _hits(b.hits))
                    assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-5)
                    # the same metadata, less the time each collection indexed the photo
                    assert [{**h.metadata, "indexed_at": 0} for h in a.hits] == [{**h.metadata, "indexed_at": 0} for h in b.hits]
                    compared += 1
        assert compared == len(queries) * 6
        t = local.search("a cat", where={"caption": {"in": captions}}, threshold=0.5)
        assert t.hits and _hits(t.hits) == _hits(remote.search("a cat", where={"caption": {"in": captions}}, threshold=0.5).hits)


# ------------------------------------------------------------------------------------- 100k vectors


def _metadata(i: int) -> dict[str, Any]:
    return {
        "g": i % 1000,  # g < 100: 10 %; g < 10: 1 %; g == 0: 0.1 %
        "camera": f"cam-{i % 100:02d}",
        "day": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "labels": ["car", "white"] if i % 4 == 0 else ["truck"],
        "speed": float(i % 130),
    }


# (filter, the exact mask from the generating numbers, written here without clipseek.filters)
def _cases(i: np.ndarray) -> list[tuple[Any, np.ndarray | None]]:
    day, hour = 1 + i % 28, i % 24
    return [
        (None, None),
        ({"g": {"lt": 100}}, i % 1000 < 100),  # 10 %
        ({"g": {"lt": 10}}, i % 1000 < 10),  # 1 %
        ({"g": 0}, i % 1000 == 0),  # 0.1 %
        ({"camera": {"in": ["cam-07", "cam-42"]}}, np.isin(i % 100, [7, 42])),
        ({"day": {"gte": "2024-05-03T12:00:00+00:00", "lt": "2024-05-04"}}, (day == 3) & (hour >= 12)),
        ({"labels": "white", "speed": {"gt": 120}}, (i % 4 == 0) & (i % 130 > 120)),
    ]


def _exact(X: np.ndarray, q: np.ndarray, mask: np.ndarray | None, ids: list[str], k: int = 10) -> list[tuple[str, float]]:
    s = X @ q
    rows = np.arange(len(s)) if mask is None else np.nonzero(mask)[0]
    top = rows[np.argsort(-s[rows], kind="stable")[: k + 20]]
    return sorted(((ids[r], float(s[r])) for r in top), key=lambda p: (-p[1], p[0]))[:k]


@pytest.fixture(scope="module")
def hundred_k(tmp_path_factory, milvus_uri, milvus_prefix) -> Any:  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPSEEK_MILVUS_URI", milvus_uri)
    mp.setenv("CLIPSEEK_MILVUS_PREFIX", milvus_prefix)
    path = tmp_path_factory.mktemp("100k")
    X = embedding_like(N, seed=0)
    ids = [f"v{i:06d}" for i in range(N)]
    from clipseek.stores.local import LocalStore

    local = LocalStore(path / "local", DIM, exact_below=10 * N)  # the exact scan
    remote = MilvusStore(path / "milvus", DIM, index="FLAT")
    t0 = time.perf_counter()
    for s in range(0, N, 5000):
        recs = [Record(ids[i], X[i], _metadata(i)) for i in range(s, s + 5000)]
        local.upsert(recs)
        remote.upsert(recs)
    loaded = time.perf_counter() - t0
    yield X, ids, local, remote, loaded
    local.close()
    remote.close()
    MilvusStore.destroy(path / "milvus")
    mp.undo()


def test_100k_vectors_same_answers_from_local_and_milvus(hundred_k) -> None:  # type: ignore[no-untyped-def]
    X, ids, local, remote, _ = hundred_k
    assert local.count() == remote.count() == N
    Q = embedding_like(12, seed=7)
    i = np.arange(N)
    for where, mask in _cases(i):
        conds = filters.parse(where) if where else []
        assert local.count(conds) == remote.count(conds) == (N if mask is None else int(mask.sum()))
        for q in Q:
            a, b = _hits(local.search(q, 10, where=conds)), _hits(remote.search(q, 10, where=conds))
            assert_congruent(a, b)
            ref = _exact(X, q, mask, ids)
            assert len(a) == len(ref) == 10
            # the exact answer (a tie within float32 rounding may order two ids either way)
            assert max(abs(x - y) for (_, x), (_, y) in zip(a, ref)) <= 1e-5
            assert len({j for j, _ in a} & {j for j, _ in ref}) >= 9
    # threshold, exclusion and ranks past 10 agree too
    q = Q[0]
    conds = filters.parse({"g": {"lt": 100}})
    assert_congruent(_hits(local.search(q, 50, where=conds, min_cosine=0.8)), _hits(remote.search(q, 50, where=conds, min_cosine=0.8)))
    excl = [h.id for h in local.search(q, 5)]
    assert_congruent(_hits(local.search(q, 100, exclude=excl)), _hits(remote.search(q, 100, exclude=excl)))


def test_filtered_recall_on_hnsw_at_10_1_and_01_percent(hundred_k) -> None:  # type: ignore[no-untyped-def]
    """The same collection re-indexed with Milvus's HNSW (the store's default index)."""
    from pymilvus import utility

    X, ids, _local, remote, _ = hundred_k
    col = remote._col
    col.release()
    col.drop_index()
    col.create_index("vector", {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 16, "efConstruction": 200}})
    col.flush()
    utility.wait_for_index_building_complete(remote.collection_name, using=remote._alias, timeout=600)
    col.load()
    Q = embedding_like(40, seed=11)
    i = np.arange(N)
    cases = dict((repr(w), (w, m)) for w, m in _cases(i)[:4])
    recalls = {}
    for route, exact_rows in (("default", remote.exact_rows), ("graph", 0)):
        remote.exact_rows = exact_rows
        for key, (where, mask) in cases.items():
            conds = filters.parse(where) if where else []
            found = 0
            for q in Q:
                got = {h.id for h in remote.search(q, 10, where=conds)}
                found += len(got & {j for j, _ in _exact(X, q, mask, ids)})
            recalls[(route, key)] = found / (10 * len(Q))
    print("recall@10 on HNSW:", {f"{r} {k}": v for (r, k), v in recalls.items()})
    assert min(recalls.values()) >= 0.99, recalls
