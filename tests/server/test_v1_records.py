"""Records over /v1: add by vector, server-side path, URL and upload; get; delete; the limits and
the guards on what a request may make the server read."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _httpd import serving
from PIL import Image

from clipseek.engine import Engine


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server (the kind of address the URL guard refuses) serving two images."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "blue.png").write_bytes(png((30, 40, 220)))
    (www / "big.png").write_bytes(png((30, 40, 220), (400, 400)))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    with serving(srv):
        yield f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def col(engine: Engine) -> Engine:
    engine.create("c", model="test-colors")
    return engine


def test_vector_records_add_get_delete(engine: Engine, client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/v1/collections", json={"name": "v", "dimension": 3}).status_code == 201
    recs = [
        {"id": "a", "vector": [1, 0, 0], "metadata": {"cam": "c1", "n": 1}},
        {"id": "b", "vector": [0, 2, 0], "metadata": {"cam": "c2", "n": 2}},
        {"id": "c/with/slashes", "vector": [0, 0, 3], "metadata": {"cam": "c2", "n": 3}},
    ]
    r = client.post("/v1/collections/v/records", json={"records": recs})
    assert r.json() == {"upserted": 3, "ids": ["a", "b", "c/with/slashes"]}
    r = client.get("/v1/collections/v/records/b", params={"include_vector": "true"})
    assert r.json() == {"id": "b", "metadata": {"cam": "c2", "n": 2}, "vector": [0.0, 1.0, 0.0]}
    r = client.get("/v1/collections/v/records/c/with/slashes")
    assert r.json() == {"id": "c/with/slashes", "metadata": {"cam": "c2", "n": 3}, "vector": None}
    r = client.get("/v1/collections/v/records/zzz")
    assert r.status_code == 404 and r.json()["error"]["message"] == "no record 'zzz' in collection 'v'"
    r = client.post("/v1/collections/v/records/delete", json={"where": {"cam": "c2"}})
    assert r.json() == {"deleted": 2}
    r = client.post("/v1/collections/v/records/delete", json={"ids": ["a", "nope"]})
    assert r.json() == {"deleted": 1} and engine.open("v").count() == 0
    r = client.post("/v1/collections/v/records/delete", json={})
    assert r.status_code == 400 and "give ids or where" in r.json()["error"]["message"]


def test_vector_record_errors(engine: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client(max_batch=2)
    engine.create("v", dim=3)
    r = c.post("/v1/collections/v/records", json={"records": [{"id": "a", "vector": [1, 0]}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_vector"
    assert "dimension 3" in r.json()["error"]["message"] or "3" in r.json()["error"]["message"]
    r = c.post("/v1/collections/v/records", json={"records": [{"id": f"x{i}", "vector": [1, 0, 0]} for i in range(3)]})
    assert r.status_code == 413 and r.json()["error"] == {
        "code": "too_many_records",
        "message": "3 records in one request; the limit is 2",
    }
    r = c.post("/v1/collections/v/records", json={"records": [{"vector": [1, 0, 0]}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == "record 0: a vector record needs an id"
    r = c.post("/v1/collections/v/records", json={"records": [{"id": "a", "vector": [1, 0, 0], "url": "http://x/y.png"}]})
    assert r.status_code == 400 and "exactly one of vector, url or path" in r.json()["error"]["message"]
    r = c.post("/v1/collections/v/records", json={"records": [{"id": "a", "vector": [1, 0, 0], "metadata": {"_sha256": "x"}}]})
    assert r.status_code == 400 and "bad metadata field name '_sha256'" in r.json()["error"]["message"]
    r = c.post("/v1/collections/v/records", json={"records": [{"id": "a", "url": "https://example.com/a.png"}]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "vector_only"
    r = c.post("/v1/collections/v/records/delete", json={"where": {"camra": "x"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_filter"
    assert engine.open("v").count() == 0


def test_add_by_path_inside_roots(col: Engine, make_client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    c = make_client(roots=[str(photo_dir)])
    r = c.post(
        "/v1/collections/c/records",
        json={"records": [{"path": str(photo_dir / "red.jpg"), "metadata": {"camera": "k1"}}, {"path": "sub/yellow.bmp", "id": "y"}]},
    )
    assert r.status_code == 200, r.text
    red = str(photo_dir.resolve() / "red.jpg")
    assert r.json() == {"upserted": 2, "ids": [red, "y"]}
    rec = c.get(f"/v1/collections/c/records/{red}").json()
    assert rec["metadata"]["camera"] == "k1" and rec["metadata"]["path"] == red
    assert rec["metadata"]["file_name"] == "red.jpg" and rec["metadata"]["width"] == 64
    # the same vector the engine's own index makes for that file
    stored = col.open("c").store.get([red])[0]
    enc = col.encoder("test-colors")
    assert np.allclose(stored.vector, enc.embed_image(enc.load_image(photo_dir / "red.jpg")), atol=1e-6)
    assert stored.metadata["_sha256"] == hashlib.sha256((photo_dir / "red.jpg").read_bytes()).hexdigest()
    # an index run of the folder afterwards finds the file unchanged
    rep = col.open("c").index(photo_dir)
    assert rep.unchanged == 1 and rep.added == 4


def test_path_traversal_is_refused(col: Engine, make_client, photo_dir: Path, tmp_path: Path, make_image) -> None:  # type: ignore[no-untyped-def]
    secret = make_image(tmp_path / "secret" / "s.png")
    (photo_dir / "link.png").symlink_to(secret)
    (photo_dir / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    c = make_client(roots=[str(photo_dir)])
    root = str(photo_dir.resolve())
    for bad in [
        str(photo_dir / ".." / "secret" / "s.png"),  # .. out of the root
        "../secret/s.png",  # relative, from the root
        str(secret),  # absolute, elsewhere
        str(photo_dir / "link.png"),  # a symlink inside pointing out
        "linkdir/s.png",  # through a symlinked folder
        "/etc/passwd",
    ]:
        r = c.post("/v1/collections/c/records", json={"records": [{"path": bad}]})
        assert r.status_code == 403, bad
        assert r.json()["error"] == {
            "code": "outside_roots",
            "message": f"{bad}: outside the server's roots ({root}); only files inside them can be read",
        }
    # one bad path refuses the whole request: nothing was added
    r = c.post("/v1/collections/c/records", json={"records": [{"path": "red.jpg"}, {"path": str(secret)}]})
    assert r.status_code == 403 and col.open("c").count() == 0
    r = c.post("/v1/collections/c/records", json={"records": [{"path": "missing.png"}]})
    assert r.status_code == 404 and "missing.png: no such file" in r.json()["error"]["message"]
    r = c.post("/v1/collections/c/records", json={"records": [{"path": "notes.txt"}]})
    assert r.status_code == 415 and "not an image" in r.json()["error"]["message"]
    # no roots configured: no path is read at all
    r = make_client().post("/v1/collections/c/records", json={"records": [{"path": str(photo_dir / "red.jpg")}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_roots"
    assert "--root" in r.json()["error"]["message"]


def test_url_records_and_the_address_guard(col: Engine, make_client, site: str) -> None:  # type: ignore[no-untyped-def]
    r = make_client().post("/v1/collections/c/records", json={"records": [{"url": f"{site}/blue.png"}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "refused_address"
    msg = r.json()["error"]["message"]
    assert msg.startswith(f"{site}/blue.png: refused: 127.0.0.1 resolves to 127.0.0.1, a local or private address")
    assert "allow_private_urls is off" in msg and col.open("c").count() == 0
    c = make_client(allow_private_urls=True)
    r = c.post("/v1/collections/c/records", json={"records": [{"url": f"{site}/blue.png", "metadata": {"src": "web"}}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 1, "ids": [f"{site}/blue.png"]}
    meta = col.open("c").store.get([f"{site}/blue.png"])[0].metadata
    assert meta["url"] == f"{site}/blue.png" and meta["src"] == "web"
    kept = Path(meta["path"])  # the original, content-addressed in the collection's download cache
    assert kept.read_bytes() == png((30, 40, 220)) and kept.name == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert kept.is_relative_to(col.open("c").path / "downloads")
    r = c.post("/v1/collections/c/records", json={"records": [{"url": f"{site}/missing.png"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "download_failed" and "HTTP 404" in r.json()["error"]["message"]
    r = c.post("/v1/collections/c/records", json={"records": [{"url": "file:///etc/passwd"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_url"
    r = make_client(allow_private_urls=True, max_upload_mb=0.001).post(
        "/v1/collections/c/records", json={"records": [{"url": f"{site}/big.png"}]}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_search_by_url_and_the_address_guard(col: Engine, make_client, site: str) -> None:  # type: ignore[no-untyped-def]
    col.open("c").add_vectors(["x"], [col.encoder("test-colors").embed_text("blue")])
    r = make_client().post("/v1/collections/c/search", json={"image_url": f"{site}/blue.png"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "refused_address"
    r = make_client(allow_private_urls=True).post("/v1/collections/c/search", json={"image_url": f"{site}/blue.png"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] == "x" and r.json()["query"] == {"kind": "image", "image": f"{site}/blue.png"}
    r = make_client().post("/v1/collections/c/search", json={"image_url": "/etc/passwd"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_url"


def test_upload(col: Engine, make_client) -> None:  # type: ignore[no-untyped-def]
    c = make_client()
    data = png((30, 200, 40), (40, 40))
    assert len(data) > 104
    sha = hashlib.sha256(data).hexdigest()
    r = c.post(
        "/v1/collections/c/records/upload",
        files={"file": ("shot.png", data, "image/png")},
        data={"metadata": '{"camera": "gate-2"}'},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 1, "ids": [sha]}
    rec = c.get(f"/v1/collections/c/records/{sha}").json()
    assert rec["metadata"]["camera"] == "gate-2" and rec["metadata"]["file_name"] == "shot.png"
    assert Path(rec["metadata"]["path"]).read_bytes() == data
    r = c.post("/v1/collections/c/records/upload", files={"file": ("g.png", data)}, data={"id": "gate-2/0001"})
    assert r.json()["ids"] == ["gate-2/0001"]
    r = c.post("/v1/collections/c/search", json={"text": "green", "top": 2})
    assert sorted(h["id"] for h in r.json()["hits"]) == sorted([sha, "gate-2/0001"])
    # errors
    r = c.post("/v1/collections/c/records/upload", files={"file": ("x.txt", b"plain text")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "bad_image"
    r = c.post("/v1/collections/c/records/upload", files={"file": ("x.png", data)}, data={"metadata": "[1]"})
    assert r.status_code == 422 and r.json()["error"]["message"] == "metadata: expected a JSON object"
    r = make_client(max_upload_mb=0.0001).post("/v1/collections/c/records/upload", files={"file": ("x.png", data)})
    assert r.status_code == 413 and "over the limit of 104 bytes" in r.json()["error"]["message"]
    r = make_client(max_pixels=100).post("/v1/collections/c/records/upload", files={"file": ("x.png", data)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"
    r = make_client(max_body_mb=0.0001).post("/v1/collections/c/records/upload", files={"file": ("x.png", data)})
    assert r.status_code == 413 and "request body over the limit" in r.json()["error"]["message"]
    r = c.post("/v1/collections/nope/records/upload", files={"file": ("x.png", data)})
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    assert col.open("c").count() == 2
