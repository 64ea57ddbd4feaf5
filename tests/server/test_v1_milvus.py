"""The REST API over a Milvus collection: POST /v1/collections with "store": "milvus" makes it on
the server's configured Milvus (environment or configuration file; a request never names a
server), and records, searches, filters and deletes answer as on the local store."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.milvus


def test_rest_on_milvus_answers_like_the_local_store(client) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(40, 16)).astype(np.float32)
    records = [
        {"id": f"r{i:02d}", "vector": vecs[i].tolist(), "metadata": {"camera": f"k{i % 4}", "speed": i}}
        for i in range(40)
    ]
    answers = {}
    for name, store in (("onlocal", None), ("onmilvus", "milvus")):
        r = client.post("/v1/collections", json={"name": name, "dimension": 16, **({"store": store} if store else {})})
        assert r.status_code == 201, r.text
        assert r.json()["store"] == (store or "local")
        r = client.post(f"/v1/collections/{name}/records", json={"records": records})
        assert r.status_code == 200 and r.json()["upserted"] == 40, r.text
        out = []
        for q in (
            {"vector": vecs[5].tolist(), "top": 5},
            {"vector": vecs[7].tolist(), "top": 5, "where": {"camera": {"in": ["k1", "k2"]}, "speed": {"gte": 10}}},
            {"id": "r09", "top": 3},
        ):
            r = client.post(f"/v1/collections/{name}/search", json=q)
            assert r.status_code == 200, r.text
            out.append([(h["id"], h["metadata"]) for h in r.json()["hits"]] + [round(h["cosine"], 5) for h in r.json()["hits"]])
        assert client.post(f"/v1/collections/{name}/records/delete", json={"where": {"camera": "k0"}}).json() == {"deleted": 10}
        assert client.get(f"/v1/collections/{name}").json()["count"] == 30
        answers[name] = out
    assert answers["onmilvus"] == answers["onlocal"]
    # the ranking is the exact one (an independent numpy oracle): r05 first, then by cosine
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    order = [f"r{i:02d}" for i in np.argsort(-(unit @ unit[5]), kind="stable")[:5]]
    assert [rid for rid, _ in answers["onmilvus"][0][:5]] == order
    # a filter keeps only cameras k1/k2 with speed >= 10, and r09 is not its own neighbour
    assert all(m["camera"] in ("k1", "k2") and m["speed"] >= 10 for _, m in answers["onmilvus"][1][:5])
    assert "r09" not in [rid for rid, _ in answers["onmilvus"][2][:3]]


def test_a_request_cannot_name_a_milvus_server(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "x", "dimension": 4, "store": "milvus", "store_uri": "http://10.0.0.1:19530"})
    assert r.status_code == 422 and "store_uri" in r.json()["error"]["message"]
