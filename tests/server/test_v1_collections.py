"""Collections over /v1, access control (keys, read-only, rate limit) and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipseek.engine import Engine


def test_create_list_describe_delete(engine: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "photos", "model": "test-colors"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "photos" and info["vector_only"] is False and info["count"] == 0
    assert info["model"] == {"name": "test-colors", "model_id": "tests/colors-4x4", "dim": 48, "version": "1"}
    assert info["store"] == "local" and info["fields"] == [] and info["job"] is None and "path" not in info
    engine.open("photos").index(photo_dir)
    r = client.post("/v1/collections", json={"name": "vecs", "dimension": 8})
    assert r.status_code == 201 and r.json()["vector_only"] is True and r.json()["model"]["dim"] == 8
    r = client.get("/v1/collections")
    assert [c["name"] for c in r.json()["collections"]] == ["photos", "vecs"]
    d = client.get("/v1/collections/photos").json()
    assert d["count"] == 5 and {"path", "file_name", "folder", "width", "height"} <= set(d["fields"])
    assert d["disk_bytes"] > 0 and d["last_run"]["added"] == 5 and d["created_at"]
    r = client.delete("/v1/collections/vecs")
    assert r.json() == {"deleted": "vecs"} and engine.names() == ["photos"]
    r = client.get("/v1/collections/vecs")
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    assert "no collection 'vecs'" in r.json()["error"]["message"]
    r = client.delete("/v1/collections/vecs")
    assert r.status_code == 404
    assert client.get("/v1/collections/..").status_code == 404
    assert client.delete("/v1/collections/..").status_code == 404


def test_list_shows_collections_it_cannot_open(engine: Engine, client) -> None:  # type: ignore[no-untyped-def]
    engine.create("ok", dim=2)
    engine.create("bad", dim=2)
    engine.close()
    (engine.data_dir / "collections" / "bad" / "collection.json").write_text("{not json")
    body = client.get("/v1/collections").json()
    assert [c["name"] for c in body["collections"]] == ["ok"]
    assert body["unavailable"][0]["name"] == "bad" and "not a valid collection file" in body["unavailable"][0]["error"]
    assert client.delete("/v1/collections/bad").json() == {"deleted": "bad"}


def test_create_errors(engine: Engine, client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/v1/collections", json={"name": "a", "dimension": 4}).status_code == 201
    r = client.post("/v1/collections", json={"name": "a", "dimension": 4})
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "collection_exists",
        "message": "collection 'a' already exists",
    }
    r = client.post("/v1/collections", json={"name": "../x", "dimension": 4})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("bad collection name '../x'")
    r = client.post("/v1/collections", json={"name": "b", "dimension": 4, "model": "test-colors"})
    assert r.status_code == 400 and "not both" in r.json()["error"]["message"]
    r = client.post("/v1/collections", json={"name": "b", "dimension": 0})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("dimension:")
    r = client.post("/v1/collections", json={"name": "b", "model": "no-such-model"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_plugin"
    assert "unknown model 'no-such-model'" in r.json()["error"]["message"]
    r = client.post("/v1/collections", json={"name": "b", "dim": 4})
    assert r.status_code == 422 and "dim" in r.json()["error"]["message"]
    assert engine.names() == ["a"]


def test_default_model_is_the_configured_one(engine: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    r = make_client(model="test-colors").post("/v1/collections", json={"name": "d"})
    assert r.status_code == 201 and r.json()["model"]["name"] == "test-colors"


def test_unknown_routes_and_methods_are_json(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no such endpoint: GET /v1/nothing"
    r = client.put("/v1/collections")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_keys_read_only_and_read_write(engine: Engine, client, api_key) -> None:  # type: ignore[no-untyped-def]
    engine.create("v", dim=2).add_vectors(["a"], [[1, 0]])
    # no key exists: open on localhost
    assert client.get("/v1/collections").status_code == 200
    rw = api_key()
    ro = api_key(read_only=True)
    r = client.get("/v1/collections")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "needs an API key" in r.json()["error"]["message"]
    r = client.get("/v1/collections", headers={"Authorization": "Bearer csk_wrong"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown API key"
    # read-only: may read and search, not write
    assert client.get("/v1/collections/v", headers=ro).json()["count"] == 1
    r = client.post("/v1/collections/v/search", json={"vector": [1, 0]}, headers=ro)
    assert r.status_code == 200 and r.json()["hits"][0]["id"] == "a"
    for method, path, body in [
        ("POST", "/v1/collections", {"name": "w", "dimension": 2}),
        ("POST", "/v1/collections/v/records", {"records": [{"id": "b", "vector": [0, 1]}]}),
        ("POST", "/v1/collections/v/records/delete", {"ids": ["a"]}),
        ("DELETE", "/v1/collections/v", None),
        ("POST", "/v1/collections/v/index", {"source": "/x"}),
    ]:
        r = client.request(method, path, json=body, headers=ro)
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "forbidden" and "is read-only" in r.json()["error"]["message"]
    assert engine.open("v").count() == 1 and engine.names() == ["v"]
    # read-write, sent the other accepted ways
    key = rw["Authorization"].removeprefix("Bearer ")
    r = client.post("/v1/collections/v/records", json={"records": [{"id": "b", "vector": [0, 1]}]}, headers={"X-API-Key": key})
    assert r.status_code == 200 and engine.open("v").count() == 2
    assert client.get("/v1/collections", headers={"Api-Key": key}).status_code == 200


def test_rate_limit_answers_429_with_retry_after(engine: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client(rate_limit=0.5, rate_burst=3)
    codes = [c.get("/v1/collections").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = c.get("/v1/collections")
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "rate_limited" and "at most 0.5 per second" in r.json()["error"]["message"]


def test_body_limit(engine: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    engine.create("v", dim=2)
    c = make_client(max_body_mb=0.001)
    big = {"records": [{"id": f"r{i}", "vector": [1, 0]} for i in range(100)]}
    r = c.post("/v1/collections/v/records", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("path", ["/v1/collections", "/v1/collections/{name}/search", "/v1/jobs/{job_id}"])
def test_openapi_documents_bodies(client, path: str) -> None:  # type: ignore[no-untyped-def]
    doc = client.get("/openapi.json").json()
    assert path in doc["paths"]
    schemas = doc["components"]["schemas"]
    assert {"SearchBody", "SearchOut", "CollectionInfo", "CreateCollection", "JobOut", "AddRecords"} <= set(schemas)
    assert set(schemas["SearchOut"]["properties"]) >= {"hits", "took_ms", "timing", "query"}


def test_models_a_request_may_name(engine: Engine, client, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("clipseek.modelfiles.find_local", lambda name: None)
    r = client.post("/v1/collections", json={"name": "m", "model": "clip-vit-b32"})
    assert r.status_code == 503 and r.json()["error"] == {
        "code": "model_unavailable",
        "message": "model 'clip-vit-b32' is not on this server; its owner can get it with "
        "`clipseek model pull clip-vit-b32` (or `clipseek model unpack`) and retry",
    }
    for spec in [str(tmp_path / "some-model"), "openai/clip-vit-base-patch32", "../models/x", "~/m"]:
        r = client.post("/v1/collections", json={"name": "m", "model": spec})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_model", spec
        assert "model folders and hub ids are for the server's owner to configure" in r.json()["error"]["message"]
    assert engine.names() == []
