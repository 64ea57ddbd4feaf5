"""Zero-shot labels and thumbnails over /v1."""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipseek import zeroshot
from clipseek.engine import Engine


@pytest.fixture
def photos(engine: Engine, photo_dir: Path) -> Engine:
    engine.create("p", model="test-colors").index(photo_dir)
    return engine


def test_classify_a_record_an_upload_and_a_vector(photos: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    rid = str(photo_dir.resolve() / "red.jpg")
    labels = ["red", "green", "blue"]
    r = client.post("/v1/collections/p/classify", json={"id": rid, "labels": labels})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"kind": "like", "like": rid} and body["model"] == "test-colors"
    enc = photos.encoder("test-colors")
    probs = zeroshot.classify(enc, photos.open("p").store.get([rid])[0].vector[None], labels)[0]
    assert [x["label"] for x in body["labels"]][0] == "red"
    assert {x["label"]: x["probability"] for x in body["labels"]} == {
        lab: round(float(p), 6) for lab, p in zip(labels, probs)
    }
    assert sum(x["probability"] for x in body["labels"]) == pytest.approx(1, abs=1e-5)
    data = (photo_dir / "blue.webp").read_bytes()
    r = client.post(
        "/v1/collections/p/classify/image", files={"file": ("q.webp", data)}, data={"labels": "red,绿色,blue", "top": "1"}
    )
    assert r.status_code == 200, r.text
    assert [x["label"] for x in r.json()["labels"]] == ["blue"] and r.json()["query"] == {"kind": "image", "image": "q.webp"}
    r = client.post("/v1/collections/p/classify/image", files={"file": ("q.webp", data)}, data={"labels": '["绿色", "蓝色"]'})
    assert r.json()["labels"][0]["label"] == "蓝色"
    v = enc.embed_text("green")
    r = client.post("/v1/collections/p/classify", json={"vector": v.tolist(), "labels": ["red", "green"], "top": 1})
    assert r.json()["labels"][0]["label"] == "green" and len(r.json()["labels"]) == 1


def test_classify_errors(photos: Engine, client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections/p/classify", json={"id": "nope", "labels": ["a", "b"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "record_not_found"
    r = client.post("/v1/collections/p/classify", json={"id": "x", "labels": ["a"]})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("labels:")
    r = client.post("/v1/collections/p/classify", json={"labels": ["a", "b"]})
    assert r.status_code == 400 and "exactly one of id, image_url or vector" in r.json()["error"]["message"]
    r = client.post("/v1/collections/p/classify", json={"vector": [1, 2], "labels": ["a", "b"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_vector"
    r = client.post("/v1/collections/p/classify/image", files={"file": ("q.png", b"x")}, data={"labels": "a"})
    assert r.status_code == 422 and "at least two labels" in r.json()["error"]["message"]
    photos.create("v", dim=2).add_vectors(["a"], [[1, 0]])
    r = client.post("/v1/collections/v/classify", json={"id": "a", "labels": ["x", "y"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "vector_only"


def jpeg(r) -> Image.Image:  # type: ignore[no-untyped-def]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG"
    return img


def test_thumbnails_of_indexed_and_uploaded_records(photos: Engine, client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    rid = str(photo_dir.resolve() / "red.jpg")
    url = f"/v1/collections/p/records/{urllib.parse.quote(rid)}/thumbnail"
    img = jpeg(client.get(url, params={"size": 32}))
    assert img.size == (32, 24)  # 64x48, aspect kept
    r, g, b = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    assert r > 150 and g < 90 and b < 90
    assert jpeg(client.get(url)).size == (64, 48)  # never enlarged beyond the original
    up = io.BytesIO()
    Image.new("RGB", (300, 100), (30, 40, 220)).save(up, "PNG")
    sha = client.post("/v1/collections/p/records/upload", files={"file": ("u.png", up.getvalue())}).json()["ids"][0]
    assert jpeg(client.get(f"/v1/collections/p/records/{sha}/thumbnail", params={"size": 60})).size == (60, 20)
    r = client.get(url, params={"size": 5000})
    assert r.status_code == 422 and r.json()["error"]["message"] == "query.size: Input should be less than or equal to 1024"


def test_thumbnails_come_only_from_the_records_own_file(photos: Engine, client, photo_dir: Path, tmp_path: Path, make_image) -> None:  # type: ignore[no-untyped-def]
    other = make_image(tmp_path / "elsewhere" / "private.png")
    col = photos.open("p")
    # a client's metadata can name any path: it is never read (no server-read hash on the record)
    col.add_vectors(["v"], [np.ones(48)], [{"path": str(other)}])
    r = client.get("/v1/collections/p/records/v/thumbnail")
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_image"
    assert "added as a vector" in r.json()["error"]["message"]
    # the file changed or went away since it was indexed
    blue = photo_dir.resolve() / "blue.webp"
    Image.new("RGB", (10, 10), (0, 0, 0)).save(blue, "WEBP")
    r = client.get(f"/v1/collections/p/records/{blue}/thumbnail")
    assert r.status_code == 404 and r.json()["error"]["code"] == "image_changed"
    (photo_dir / "green.png").unlink()
    r = client.get(f"/v1/collections/p/records/{photo_dir.resolve() / 'green.png'}/thumbnail")
    assert r.status_code == 404 and r.json()["error"]["code"] == "image_gone"
    r = client.get("/v1/collections/p/records/..%2F..%2Fetc%2Fpasswd/thumbnail")
    assert r.status_code == 404 and r.json()["error"]["code"] == "record_not_found"
