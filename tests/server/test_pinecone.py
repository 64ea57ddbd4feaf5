"""The Pinecone-compatible API, driven by Pinecone's official Python client (``pinecone`` from
PyPI) against a real ``clipseek serve`` subprocess: the seed's tutorial calls run unchanged but for
the host.

Expected rankings and filter results come from numpy and plain Python in this file (exact cosine of
normalised vectors, ties by id), never from clipseek's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pinecone import (  # the vendor's own client, from the test extra
    ApiError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    Pinecone,
    ServerlessSpec,
    UnauthorizedError,
)

from clipseek.server.keys import KeyStore

from ._serving import LiveServer, start_server

DIM = 512
N = 150
CAMERAS = [f"cam-{i}" for i in range(5)]


# ----------------------------------------------------------------------------- a real server

def Server(home: Path) -> LiveServer:
    """``clipseek serve`` over ``home`` on a free port (the shared starter, tests/server/_serving.py)."""
    return start_server(home, home.parent / "server.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("pinecone") / "home"
    home.mkdir()
    srv = Server(home)
    yield srv
    srv.stop()


@pytest.fixture
def pc(server: LiveServer) -> Iterator[Pinecone]:
    client = Pinecone(api_key="any-key-while-the-server-has-none", host=server.url + "/pinecone")
    yield client
    client.close()


@pytest.fixture
def new_index(pc: Pinecone, server: LiveServer) -> Iterator[Callable[..., Any]]:
    """Create an index (512-d, cosine) and return its data-plane client; deleted after the test."""
    made: list[tuple[str, Any]] = []

    def make(name: str) -> Any:
        pc.create_index(name=name, dimension=DIM, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
        idx = pc.Index(host=f"{server.url}/pinecone/{name}")
        made.append((name, idx))
        return idx

    yield make
    for name, idx in made:
        idx.close()
        if pc.has_index(name):
            pc.delete_index(name)


# ----------------------------------------------------------------------------- data and oracles

def make_records(n: int = N, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    ids = [f"rec-{i:03d}" for i in range(n)]
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    metas = []
    for i in range(n):
        meta: dict[str, Any] = {"camera": CAMERAS[i % 5], "speed": float((i * 7) % 120), "year": 2020 + i % 4}
        if i % 3 == 0:
            meta["tags"] = ["night", "rain"] if i % 2 else ["night"]
        metas.append(meta)
    return ids, vecs, metas


def upsert_all(idx: Any, ids: list[str], vecs: np.ndarray, metas: list[dict[str, Any]], namespace: str = "") -> int:
    done = 0
    for s in range(0, len(ids), 64):  # batches, as the seed's tutorial does
        batch = [
            {"id": i, "values": v.tolist(), "metadata": m}
            for i, v, m in zip(ids[s : s + 64], vecs[s : s + 64], metas[s : s + 64])
        ]
        done += idx.upsert(vectors=batch, namespace=namespace).upserted_count
    return done


def cosine_ranking(
    ids: list[str], vecs: np.ndarray, q: np.ndarray, keep: Callable[[int], bool] = lambda i: True
) -> list[tuple[str, float]]:
    unit = vecs.astype(np.float64) / np.linalg.norm(vecs.astype(np.float64), axis=1, keepdims=True)
    qn = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64))
    cos = unit @ qn
    rows = [(ids[i], float(cos[i])) for i in range(len(ids)) if keep(i)]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


# ----------------------------------------------------------------------------- the seed's workflow

def test_seed_tutorial_workflow(pc: Pinecone, server: LiveServer) -> None:
    name = "seed-tutorial"
    assert not pc.has_index(name)
    desc = pc.create_index(name=name, dimension=DIM, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    assert desc.name == name
    assert desc.dimension == DIM and desc.metric == "cosine"
    assert desc.status.ready
    assert desc.host == f"{server.url}/pinecone/{name}"
    assert pc.has_index(name)
    assert name in [i.name for i in pc.list_indexes()]
    assert pc.describe_index(name).host == desc.host

    index = pc.Index(name)  # by name: the client describes the index to learn its host
    ids, vecs, metas = make_records()
    assert upsert_all(index, ids, vecs, metas) == N

    stats = index.describe_index_stats()
    assert stats.total_vector_count == N
    assert stats.dimension == DIM
    assert {ns: s.vector_count for ns, s in stats.namespaces.items()} == {"__default__": N}
    assert stats.index_fullness == 0.0

    q = np.random.default_rng(7).normal(size=DIM).astype(np.float32)
    res = index.query(vector=q.tolist(), top_k=10, include_metadata=True)
    expected = cosine_ranking(ids, vecs, q)[:10]
    assert [m.id for m in res.matches] == [i for i, _ in expected]
    np.testing.assert_allclose([m.score for m in res.matches], [c for _, c in expected], atol=1e-5)
    for m in res.matches:
        assert m.metadata == metas[ids.index(m.id)]
        assert m.values == []  # not asked for

    # a stored record's own vector finds it first, with cosine 1
    res = index.query(vector=vecs[42].tolist(), top_k=3, include_values=True)
    assert res.matches[0].id == "rec-042"
    assert res.matches[0].score == pytest.approx(1.0, abs=1e-5)
    unit42 = vecs[42] / np.linalg.norm(vecs[42])
    np.testing.assert_allclose(res.matches[0].values, unit42, atol=1e-6)  # stored L2-normalised

    # query by an existing id: the same ranking as by its vector (itself included, as Pinecone does)
    by_id = index.query(id="rec-042", top_k=5)
    assert [m.id for m in by_id.matches] == [i for i, _ in cosine_ranking(ids, vecs, vecs[42])[:5]]

    fetched = index.fetch(ids=["rec-001", "rec-002", "no-such-id"])
    assert sorted(fetched.vectors) == ["rec-001", "rec-002"]
    assert fetched.vectors["rec-002"].metadata == metas[2]
    np.testing.assert_allclose(fetched.vectors["rec-001"].values, vecs[1] / np.linalg.norm(vecs[1]), atol=1e-6)

    index.delete(ids=["rec-000", "rec-001", "never-existed"])
    assert index.describe_index_stats().total_vector_count == N - 2
    assert index.fetch(ids=["rec-000", "rec-001"]).vectors == {}

    index.delete(filter={"camera": {"$eq": "cam-3"}})
    gone = {ids[i] for i in range(N) if metas[i]["camera"] == "cam-3"}
    left = N - 2 - len(gone)
    assert index.describe_index_stats().total_vector_count == left
    assert index.fetch(ids=sorted(gone)).vectors == {}
    res = index.query(vector=q.tolist(), top_k=N)
    assert {m.id for m in res.matches} == set(ids) - gone - {"rec-000", "rec-001"}

    index.delete(delete_all=True)
    assert index.describe_index_stats().total_vector_count == 0
    assert index.query(vector=q.tolist(), top_k=5).matches == []

    index.close()
    pc.delete_index(name)
    assert not pc.has_index(name)
    assert name not in [i.name for i in pc.list_indexes()]
    with pytest.raises(NotFoundError):
        pc.describe_index(name)


# ----------------------------------------------------------------------------- filters

FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"camera": {"$eq": "cam-2"}}, lambda m: m["camera"] == "cam-2"),
    ({"camera": "cam-4"}, lambda m: m["camera"] == "cam-4"),
    ({"year": {"$in": [2021, 2023]}}, lambda m: m["year"] in (2021, 2023)),
    ({"camera": {"$in": ["cam-0", "cam-1"]}}, lambda m: m["camera"] in ("cam-0", "cam-1")),
    ({"speed": {"$gte": 60}}, lambda m: m["speed"] >= 60),
    ({"speed": {"$gt": 14, "$lte": 91}}, lambda m: 14 < m["speed"] <= 91),
    ({"speed": {"$lt": 21}}, lambda m: m["speed"] < 21),
    (
        {"$and": [{"camera": {"$in": ["cam-0", "cam-2", "cam-4"]}}, {"speed": {"$gte": 35}}]},
        lambda m: m["camera"] in ("cam-0", "cam-2", "cam-4") and m["speed"] >= 35,
    ),
    ({"camera": "cam-1", "year": {"$gte": 2022}}, lambda m: m["camera"] == "cam-1" and m["year"] >= 2022),
    ({"tags": {"$eq": "rain"}}, lambda m: "rain" in m.get("tags", [])),  # a list field: membership
    ({"tags": {"$in": ["night"]}}, lambda m: "night" in m.get("tags", [])),
    ({"no_such_field": {"$eq": 1}}, lambda m: False),  # as in Pinecone: matches nothing
]


def test_filters_give_the_same_records_as_a_numpy_filter(new_index: Callable[..., Any]) -> None:
    index = new_index("filters")
    ids, vecs, metas = make_records(seed=1)
    # the client's own batching: 3 requests of at most 50 vectors, sent concurrently
    res = index.upsert(
        vectors=[{"id": i, "values": v.tolist(), "metadata": m} for i, v, m in zip(ids, vecs, metas)],
        batch_size=50,
        max_concurrency=3,
    )
    assert (res.upserted_count, res.total_batch_count, res.failed_batch_count) == (N, 3, 0)
    assert index.describe_index_stats().total_vector_count == N
    q = np.random.default_rng(11).normal(size=DIM).astype(np.float32)
    for flt, keep in FILTERS:
        expected = cosine_ranking(ids, vecs, q, lambda i, keep=keep: keep(metas[i]))  # type: ignore[misc]
        assert expected or flt.get("no_such_field"), f"filter {flt} should match some records"
        res = index.query(vector=q.tolist(), top_k=N, filter=flt, include_metadata=True)
        assert [m.id for m in res.matches] == [i for i, _ in expected], flt
        np.testing.assert_allclose([m.score for m in res.matches], [c for _, c in expected], atol=1e-5)
        assert all(keep(m.metadata) for m in res.matches)
        top = index.query(vector=q.tolist(), top_k=5, filter=flt)
        assert [m.id for m in top.matches] == [i for i, _ in expected[:5]], flt


@pytest.mark.parametrize(
    ("flt", "op"),
    [
        ({"camera": {"$ne": "cam-2"}}, "$ne"),
        ({"camera": {"$nin": ["cam-2"]}}, "$nin"),
        ({"tags": {"$exists": True}}, "$exists"),
        ({"$or": [{"camera": "cam-1"}, {"year": 2021}]}, "$or"),
    ],
)
def test_unsupported_filter_operators_are_refused_by_name(new_index: Callable[..., Any], flt: dict[str, Any], op: str) -> None:
    index = new_index(f"unsupported-{op.strip('$')}")
    ids, vecs, metas = make_records(n=10)
    upsert_all(index, ids, vecs, metas)
    for call in (
        lambda: index.query(vector=vecs[0].tolist(), top_k=3, filter=flt),
        lambda: index.delete(filter=flt),
    ):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status_code == 400
        assert f"filter operator '{op}' is not supported" in str(err.value)
    assert index.describe_index_stats().total_vector_count == 10  # the refused delete deleted nothing


# ----------------------------------------------------------------------------- namespaces

def test_namespaces_are_kept_apart(new_index: Callable[..., Any]) -> None:
    index = new_index("spaces")
    ids, vecs, metas = make_records(n=40, seed=2)
    _, vecs_b, _ = make_records(n=40, seed=3)
    upsert_all(index, ids, vecs, metas)  # default namespace
    upsert_all(index, ids[:30], vecs_b[:30], [{"camera": "b-side"}] * 30, namespace="b")  # the same ids
    upsert_all(index, ids[:5], vecs[:5], [{"camera": "c-side"}] * 5, namespace="c")

    stats = index.describe_index_stats()
    assert {ns: s.vector_count for ns, s in stats.namespaces.items()} == {"__default__": 40, "b": 30, "c": 5}
    assert stats.total_vector_count == 75

    q = vecs_b[3]
    res_b = index.query(vector=q.tolist(), top_k=10, namespace="b", include_metadata=True)
    assert [m.id for m in res_b.matches] == [i for i, _ in cosine_ranking(ids[:30], vecs_b[:30], q)[:10]]
    assert res_b.matches[0].id == "rec-003" and res_b.matches[0].score == pytest.approx(1.0, abs=1e-5)
    assert {m.metadata["camera"] for m in res_b.matches} == {"b-side"}
    assert res_b.namespace == "b"
    res_default = index.query(vector=q.tolist(), top_k=10)
    assert [m.id for m in res_default.matches] == [i for i, _ in cosine_ranking(ids, vecs, q)[:10]]
    # a filter inside a namespace sees only that namespace's records
    assert index.query(vector=q.tolist(), top_k=50, namespace="c", filter={"camera": "b-side"}).matches == []
    assert len(index.query(vector=q.tolist(), top_k=50, namespace="c", filter={"camera": "c-side"}).matches) == 5
    assert index.query(vector=q.tolist(), top_k=5, namespace="nobody-here").matches == []

    assert index.fetch(ids=["rec-001"], namespace="b").vectors["rec-001"].metadata == {"camera": "b-side"}
    assert index.fetch(ids=["rec-001"]).vectors["rec-001"].metadata == metas[1]
    assert index.fetch(ids=["rec-035"], namespace="b").vectors == {}

    index.delete(ids=["rec-000"], namespace="c")
    index.delete(filter={"camera": {"$in": ["cam-0", "cam-1"]}})  # default namespace only
    index.delete(delete_all=True, namespace="b")
    stats = index.describe_index_stats()
    assert {ns: s.vector_count for ns, s in stats.namespaces.items()} == {"__default__": 24, "c": 4}
    assert index.fetch(ids=["rec-000"]).vectors == {}  # cam-0 in the default namespace
    assert index.fetch(ids=["rec-001"], namespace="c").vectors["rec-001"].metadata == {"camera": "c-side"}


# ----------------------------------------------------------------------------- update, list

def test_update_and_list(new_index: Callable[..., Any]) -> None:
    index = new_index("upd")
    ids, vecs, metas = make_records(n=30, seed=4)
    upsert_all(index, ids, vecs, metas)

    index.update(id="rec-005", set_metadata={"camera": "moved", "checked": True})
    assert index.fetch(ids=["rec-005"]).vectors["rec-005"].metadata == {**metas[5], "camera": "moved", "checked": True}
    index.update(id="rec-006", values=vecs[20].tolist())
    res = index.query(vector=vecs[20].tolist(), top_k=2)
    assert sorted(m.id for m in res.matches) == ["rec-006", "rec-020"]
    assert all(m.score == pytest.approx(1.0, abs=1e-5) for m in res.matches)
    assert index.fetch(ids=["rec-006"]).vectors["rec-006"].metadata == metas[6]  # metadata kept
    assert index.update(filter={"camera": "cam-2"}, set_metadata={"flag": "x"}).matched_records == 6
    flagged = index.query(vector=vecs[0].tolist(), top_k=30, filter={"flag": "x"})
    assert sorted(m.id for m in flagged.matches) == [ids[i] for i in range(30) if metas[i]["camera"] == "cam-2"]

    pages = list(index.list(prefix="rec-01", limit=4))
    assert [[v.id for v in p.vectors] for p in pages] == [
        ["rec-010", "rec-011", "rec-012", "rec-013"],
        ["rec-014", "rec-015", "rec-016", "rec-017"],
        ["rec-018", "rec-019"],
    ]
    assert sum(len(p.vectors) for p in index.list()) == 30


# ----------------------------------------------------------------------------- errors

def test_errors_in_pinecone_shape(pc: Pinecone, server: LiveServer, new_index: Callable[..., Any]) -> None:
    with pytest.raises(NotFoundError) as nf:
        pc.describe_index("no-such-index")
    assert "no-such-index" in str(nf.value)
    missing = pc.Index(host=f"{server.url}/pinecone/no-such-index")
    with pytest.raises(NotFoundError):
        missing.query(vector=[0.1] * DIM, top_k=1)
    missing.close()
    with pytest.raises(NotFoundError):
        pc.Index("no-such-index")  # by name: the describe fails
    with pytest.raises(NotFoundError):
        pc.delete_index("no-such-index")

    index = new_index("errs")
    with pytest.raises(ConflictError) as conflict:
        pc.create_index(name="errs", dimension=DIM, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    assert "already exists" in str(conflict.value)
    with pytest.raises(ApiError) as metric:
        pc.create_index(name="euclid", dimension=8, metric="euclidean", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    assert metric.value.status_code == 400 and "metric 'euclidean' is not supported" in str(metric.value)
    assert not pc.has_index("euclid")

    with pytest.raises(ApiError) as dim:
        index.upsert(vectors=[{"id": "short", "values": [0.1, 0.2, 0.3]}])
    assert dim.value.status_code == 400 and "dimension 3 does not match the index's dimension 512" in str(dim.value)
    with pytest.raises(ApiError) as zero:
        index.upsert(vectors=[{"id": "zero", "values": [0.0] * DIM}])
    assert zero.value.status_code == 400 and "zero vector" in str(zero.value)
    # the client refuses nested metadata itself; the server does too, for other clients
    nested = httpx.post(
        f"{server.url}/pinecone/errs/vectors/upsert",
        json={"vectors": [{"id": "ok", "values": [0.1] * DIM}, {"id": "nested", "values": [0.1] * DIM, "metadata": {"a": {"b": 1}}}]},
    )
    assert nested.status_code == 400
    assert nested.json()["error"] == {
        "code": "INVALID_ARGUMENT",
        "message": "vector 'nested': metadata field 'a' must be a string, number, boolean or list of strings",
    }
    assert index.describe_index_stats().total_vector_count == 0  # nothing of a refused batch is written

    # the raw error body is Pinecone's shape
    r = httpx.get(f"{server.url}/pinecone/indexes/no-such-index", headers={"Api-Key": "k"})
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "index 'no-such-index' not found"}, "status": 404}


def test_vector_only_collections_are_indexes_and_model_collections_are_not(pc: Pinecone, server: LiveServer) -> None:
    from clipseek.engine import Engine

    with Engine(server.home) as eng:
        eng.create("made-elsewhere", dim=4).add_vectors(["a"], [[1.0, 0.0, 0.0, 0.0]], [{"k": "v"}])
        eng.create("photos", model="offline")
    names = [i.name for i in pc.list_indexes()]
    assert "made-elsewhere" in names and "photos" not in names
    with pytest.raises(NotFoundError) as err:
        pc.describe_index("photos")
    assert "built with the model 'offline'" in str(err.value)
    photos = pc.Index(host=f"{server.url}/pinecone/photos")
    with pytest.raises(NotFoundError):
        photos.query(vector=[0.5] * 1280, top_k=1)
    photos.close()
    with pytest.raises(ConflictError):
        pc.create_index(name="photos", dimension=4, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    desc = pc.describe_index("made-elsewhere")
    assert desc.dimension == 4
    idx = pc.Index("made-elsewhere")
    assert idx.query(vector=[1.0, 0.0, 0.0, 0.0], top_k=1, include_metadata=True).matches[0].metadata == {"k": "v"}
    # its record written without the Pinecone API belongs to the default namespace, next to others
    idx.upsert(vectors=[("a", [0.0, 1.0, 0.0, 0.0], {"k": "x-side"})], namespace="x")
    idx.upsert(vectors=[("b", [0.0, 0.0, 1.0, 0.0], {"k": "w"})])
    stats = idx.describe_index_stats()
    assert {ns: s.vector_count for ns, s in stats.namespaces.items()} == {"__default__": 2, "x": 1}
    default = idx.query(vector=[0.0, 1.0, 0.0, 0.0], top_k=5, include_metadata=True)
    assert sorted((m.id, m.metadata["k"]) for m in default.matches) == [("a", "v"), ("b", "w")]
    assert [m.id for m in idx.query(vector=[0.0, 1.0, 0.0, 0.0], top_k=5, filter={"k": {"$in": ["v", "x-side"]}}).matches] == ["a"]
    in_x = idx.query(vector=[0.0, 1.0, 0.0, 0.0], top_k=5, namespace="x", include_metadata=True)
    assert [(m.id, m.metadata["k"], round(m.score, 5)) for m in in_x.matches] == [("a", "x-side", 1.0)]
    idx.delete(delete_all=True)
    stats = idx.describe_index_stats()
    assert {ns: s.vector_count for ns, s in stats.namespaces.items()} == {"x": 1}
    idx.close()
    pc.delete_index("made-elsewhere")


# ----------------------------------------------------------------------------- API keys

def test_api_keys_through_the_client(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keys = KeyStore(home / "keys.json")
    rw, _ = keys.create(name="writer")
    ro, _ = keys.create(name="reader", read_only=True)
    srv = Server(home)
    try:
        host = srv.url + "/pinecone"
        with Pinecone(api_key="csk_wrong", host=host) as bad, pytest.raises(UnauthorizedError) as err:
            bad.list_indexes()
        assert "unknown API key" in str(err.value)

        writer = Pinecone(api_key=rw, host=host)
        writer.create_index(name="keyed", dimension=4, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
        w_index = writer.Index("keyed")
        assert w_index.upsert(vectors=[("a", [1.0, 0.0, 0.0, 0.0]), ("b", [0.0, 1.0, 0.0, 0.0])]).upserted_count == 2

        reader = Pinecone(api_key=ro, host=host)
        r_index = reader.Index("keyed")
        assert [m.id for m in r_index.query(vector=[0.9, 0.1, 0.0, 0.0], top_k=2).matches] == ["a", "b"]
        with pytest.raises(ForbiddenError) as ro_err:
            r_index.upsert(vectors=[("c", [0.0, 0.0, 1.0, 0.0])])
        assert "read-only" in str(ro_err.value)
        with pytest.raises(ForbiddenError):
            reader.delete_index("keyed")
        r = httpx.post(f"{srv.url}/pinecone/keyed/query", json={"topK": 1, "vector": [1, 0, 0, 0]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"

        writer.delete_index("keyed")
        for c in (w_index, r_index, writer, reader):
            c.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- the 2026-07 surface

def test_current_client_surface_and_deletion_protection(pc: Pinecone, server: LiveServer) -> None:
    pc.indexes.create(
        name="modern",
        schema={"fields": {"embedding": {"type": "dense_vector", "dimension": 3, "metric": "cosine"}}},
        deployment={"deployment_type": "managed", "cloud": "gcp", "region": "europe-west4"},
        deletion_protection="enabled",
        tags={"team": "lab"},
    )
    desc = pc.indexes.describe("modern")
    assert desc.schema.fields["embedding"].dimension == 3
    assert (desc.deployment.cloud, desc.deployment.region) == ("gcp", "europe-west4")
    assert desc.deletion_protection == "enabled" and desc.tags == {"team": "lab"}
    idx = pc.index(name="modern")
    idx.upsert(vectors=[("x", [1.0, 2.0, 2.0])], namespace="__default__")
    match = idx.query(vector=[1.0, 2.0, 2.0], top_k=1).matches[0]
    assert match.id == "x" and match.score == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(idx.fetch(ids=["x"]).vectors["x"].values, [1 / 3, 2 / 3, 2 / 3], atol=1e-6)
    idx.close()

    with pytest.raises(ForbiddenError) as err:
        pc.delete_index("modern")
    assert "deletion protection" in str(err.value)
    pc.configure_index("modern", deletion_protection="disabled", tags={"team": ""})
    assert pc.describe_index("modern").tags is None
    pc.delete_index("modern")
    assert not pc.indexes.exists("modern")

    with pytest.raises(ApiError) as sparse:
        pc.indexes.create(name="sparse", schema={"fields": {"kw": {"type": "sparse_vector"}}})
    assert sparse.value.status_code == 400 and "sparse_vector are not supported" in str(sparse.value)


def test_body_that_is_not_json_or_utf8_is_a_400_in_pinecone_shape(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from clipseek import Engine
    from clipseek.server import Settings, create_app

    with TestClient(create_app(Engine(tmp_path), Settings()), raise_server_exceptions=False) as c:
        for body, message in ((b'{"name": "a\xff"}', "There was an error parsing the body"), (b"{not json", "1: JSON decode error")):
            r = c.post("/pinecone/indexes", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert r.json() == {"error": {"code": "INVALID_ARGUMENT", "message": message}, "status": 400}
        r = c.post("/v1/collections", content=b'{"name": "a\xff"}', headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
