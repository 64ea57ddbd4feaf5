"""Search over /v1: every query kind gives what Collection.search gives in process."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseek.engine import Engine

RED = (220, 30, 30)  # the test encoder's "red" (tests/conftest.py COLORS)


@pytest.fixture
def photos(engine: Engine, photo_dir: Path) -> Engine:
    col = engine.create("p", model="test-colors")
    rep = col.index(photo_dir)
    assert rep.added == 5
    return engine


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def expected(engine: Engine, **query) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    res = engine.open("p").search(**query)
    return [(h.id, round(h.score, 6), round(h.cosine, 6)) for h in res.hits]


def got(body: dict) -> list[tuple[str, float, float]]:  # type: ignore[type-arg]
    return [(h["id"], h["score"], h["cosine"]) for h in body["hits"]]


def test_text_search_equals_the_engine(photos: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections/p/search", json={"text": "a red car", "top": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert Path(body["hits"][0]["id"]).name == "red.jpg"
    assert got(body) == expected(photos, text="a red car", top=3)
    assert body["query"] == {"kind": "text", "text": "a red car"}
    assert body["collection"] == "p" and body["model"] == "test-colors" and body["where"] == []
    assert set(body["timing"]) == {"encode_ms", "search_ms"} and body["took_ms"] >= body["timing"]["search_ms"]
    meta = body["hits"][0]["metadata"]
    assert meta["file_name"] == "red.jpg" and meta["path"] == str(photo_dir.resolve() / "red.jpg")
    assert not any(k.startswith("_") for k in meta)


def test_filters_threshold_and_min_cosine(photos: Engine, client) -> None:  # type: ignore[no-untyped-def]
    q = {"text": "yellow", "top": 10, "where": {"folder": "sub"}}
    r = client.post("/v1/collections/p/search", json=q)
    assert got(r.json()) == expected(photos, text="yellow", top=10, where={"folder": "sub"})
    assert [Path(h["id"]).name for h in r.json()["hits"]] == ["yellow.bmp", "white.gif"]
    assert r.json()["where"] == [{"field": "folder", "op": "eq", "value": "sub"}]
    r = client.post("/v1/collections/p/search", json={"text": "green", "threshold": 0.5, "top": 10})
    assert got(r.json()) == expected(photos, text="green", threshold=0.5, top=10)
    assert len(r.json()["hits"]) == 1 and r.json()["threshold"] == 0.5
    r = client.post("/v1/collections/p/search", json={"text": "green", "min_cosine": 0.99, "top": 10})
    assert all(h["cosine"] >= 0.99 for h in r.json()["hits"]) and len(r.json()["hits"]) == 1
    # the filter language's operator form, with a leading $ as the Pinecone-style spelling
    r = client.post("/v1/collections/p/search", json={"text": "red", "where": {"width": {"$gte": 64}}, "top": 10})
    assert r.status_code == 200 and len(r.json()["hits"]) == 5


def test_image_upload_search(photos: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    data = (photo_dir / "green.png").read_bytes()
    r = client.post("/v1/collections/p/search/image", files={"file": ("q.png", data, "image/png")}, data={"top": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert got(body) == expected(photos, image=data, top=2)
    assert Path(body["hits"][0]["id"]).name == "green.png" and body["hits"][0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert body["query"] == {"kind": "image", "image": "q.png"}
    r = client.post(
        "/v1/collections/p/search/image",
        files={"file": ("q.png", data, "image/png")},
        data={"top": "5", "where": '{"folder": "sub"}'},
    )
    assert [Path(h["id"]).name for h in r.json()["hits"]] == [
        Path(i).name for i, _, _ in expected(photos, image=data, top=5, where={"folder": "sub"})
    ]
    r = client.post("/v1/collections/p/search/image", files={"file": ("q.png", data)}, data={"where": "{folder"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("where: not valid JSON")


def test_like_search_excludes_itself(photos: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    rid = str(photo_dir.resolve() / "red.jpg")
    r = client.post("/v1/collections/p/search", json={"id": rid, "top": 10})
    assert r.status_code == 200, r.text
    ids = [h["id"] for h in r.json()["hits"]]
    assert rid not in ids and len(ids) == 4
    assert got(r.json()) == expected(photos, like=rid, top=10)
    assert r.json()["query"] == {"kind": "like", "like": rid}
    r = client.post("/v1/collections/p/search", json={"id": "nope", "top": 10})
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "record_not_found",
        "message": "no record 'nope' in collection 'p'",
    }


def test_vector_search(photos: Engine, client) -> None:  # type: ignore[no-untyped-def]
    v = photos.encoder("test-colors").embed_text("blue")
    r = client.post("/v1/collections/p/search", json={"vector": v.tolist(), "top": 2})
    assert got(r.json()) == expected(photos, vector=v, top=2)
    assert Path(r.json()["hits"][0]["id"]).name == "blue.webp"
    r = client.post("/v1/collections/p/search", json={"vector": [1.0, 2.0, 3.0]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_vector"
    assert "48" in r.json()["error"]["message"] and "3" in r.json()["error"]["message"]


def test_search_errors(photos: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client(max_top=50)
    r = c.post("/v1/collections/p/search", json={"text": "red", "top": 51})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid_request", "message": "top: at most 50 on this server, got 51"}
    r = c.post("/v1/collections/p/search", json={"text": "red", "top": 0})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("top:")
    r = c.post("/v1/collections/p/search", json={"text": "red", "where": {"camra": "x"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_filter"
    assert "camra" in r.json()["error"]["message"]
    r = c.post("/v1/collections/p/search", json={"text": "red", "where": {"width": 10**400}})
    assert r.status_code == 400 and "has no usable value" in r.json()["error"]["message"]
    r = c.post("/v1/collections/nope/search", json={"text": "red"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    assert "no collection 'nope'" in r.json()["error"]["message"]
    r = c.post("/v1/collections/p/search", json={"text": "red", "vector": [1]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "give exactly one of text, image_url, id or vector (got ['text', 'vector'])"
    r = c.post("/v1/collections/p/search", json={"txt": "red"})
    assert r.status_code == 422 and "txt" in r.json()["error"]["message"]
    r = c.post("/v1/collections/p/search", json={"text": "red", "threshold": 2})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("threshold:")
    r = c.post("/v1/collections/p/search/image", files={"file": ("x.txt", b"hello, not an image")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "bad_image"
    assert "not an image" in r.json()["error"]["message"]


def test_limits_on_uploaded_query_images(photos: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client(max_upload_mb=0.001, max_pixels=10_000)  # 1048 bytes, 100x100 pixels
    r = c.post("/v1/collections/p/search/image", files={"file": ("big.bin", b"\0" * 2000)})
    assert r.status_code == 413 and r.json()["error"] == {
        "code": "too_large",
        "message": "the uploaded file is over the limit of 1,048 bytes",
    }
    c = make_client(max_pixels=10_000)
    r = c.post("/v1/collections/p/search/image", files={"file": ("wide.png", png(RED, (200, 60)))})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"
    assert "wide.png: image too large (200x60 = 12,000 pixels, limit 10,000)" in r.json()["error"]["message"]
    r = c.post("/v1/collections/p/search/image", files={"file": ("ok.png", png(RED, (100, 100)))})
    assert r.status_code == 200 and Path(r.json()["hits"][0]["id"]).name == "red.jpg"


def test_search_event_is_emitted(photos: Engine, client) -> None:  # type: ignore[no-untyped-def]
    seen = []
    client.app.state.clipseek.on("search", lambda collection, result: seen.append((collection, result.hits[0].id)))
    r = client.post("/v1/collections/p/search", json={"text": "blue", "top": 1})
    assert seen == [("p", r.json()["hits"][0]["id"])]


def test_vector_only_collection(engine: Engine, client) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("v", dim=4)
    col.add_vectors(["a", "b"], np.eye(4)[:2], [{"k": 1}, {"k": 2}])
    r = client.post("/v1/collections/v/search", json={"id": "a", "top": 5})
    assert [h["id"] for h in r.json()["hits"]] == ["b"] and r.json()["hits"][0]["cosine"] == 0.0
    r = client.post("/v1/collections/v/search", json={"text": "red"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "vector_only"
    assert "holds vectors only" in r.json()["error"]["message"]
