"""`clipseek serve` as a real process: HTTP over a socket, refusal to listen openly without keys."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from clipseek.engine import Engine

from ._serving import LiveServer, free_port, server_env


def test_serve_refuses_all_interfaces_without_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "clipseek", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=server_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "refusing to serve on 0.0.0.0 without API keys" in res.stderr
    assert "clipseek keys create" in res.stderr
    assert "serving" not in res.stderr  # it never started listening
    assert time.monotonic() - t0 < 30


def test_vector_collection_over_http(live_server: LiveServer) -> None:
    base = f"{live_server.url}/v1"
    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/collections", json={"name": "vecs", "dimension": 3})
        assert r.status_code == 201, r.text
        assert r.json()["vector_only"] is True and r.json()["model"]["dim"] == 3
        r = http.post(
            "/collections/vecs/records",
            json={
                "records": [
                    {"id": "x", "vector": [1, 0, 0], "metadata": {"axis": "x"}},
                    {"id": "y", "vector": [0, 1, 0], "metadata": {"axis": "y"}},
                    {"id": "xy", "vector": [1, 1, 0], "metadata": {"axis": "xy"}},
                ]
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["upserted"] == 3 and r.json()["ids"] == ["x", "y", "xy"]
        r = http.post("/collections/vecs/search", json={"vector": [1, 0.1, 0], "top": 2})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert [h["id"] for h in hits] == ["x", "xy"]
        expect = float(np.dot([1, 0.1, 0], [1, 0, 0]) / np.linalg.norm([1, 0.1, 0]))
        assert abs(hits[0]["cosine"] - expect) < 1e-5 and hits[0]["score"] == hits[0]["cosine"]
        assert hits[0]["metadata"] == {"axis": "x"}
        r = http.get("/collections/vecs")
        assert r.json()["count"] == 3 and r.json()["fields"] == ["axis"]
    # what the server wrote is on disk, readable by the library once the server stopped
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15)
    assert live_server.stop() in (0, -15)
    assert "Application shutdown complete" in live_server.log()
    with Engine(live_server.home) as eng:
        assert eng.open("vecs").count() == 3


@pytest.mark.model
def test_offline_model_index_search_and_thumbnail_over_http(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The real offline model in a real server: an ingest job over the sample photos, text queries
    in English and Chinese, an uploaded image, a thumbnail; the answers equal the library's."""
    from clipseek.samples import sample_photos

    root = tmp_path / "photos"
    root.mkdir()
    for pid, path, _ in sample_photos():
        if pid in ("chelsea", "coffee", "rocket", "china", "moon"):
            shutil.copy(path, root / f"{pid}{path.suffix}")
    srv = serve(args=["--root", str(root)])
    with httpx.Client(base_url=f"{srv.url}/v1", timeout=120) as http:
        r = http.post("/collections", json={"name": "demo", "model": "offline"})
        assert r.status_code == 201, r.text
        job = http.post("/collections/demo/index", json={"source": str(root)}).json()
        while job["state"] in ("queued", "running"):
            time.sleep(0.2)
            job = http.get(f"/jobs/{job['id']}").json()
        assert job["state"] == "done" and job["report"]["added"] == 5, job
        answers = {}
        for q in ("a cat", "一杯咖啡", "a rocket"):
            r = http.post("/collections/demo/search", json={"text": q, "top": 3})
            assert r.status_code == 200, r.text
            answers[q] = [(h["id"], h["score"], h["cosine"]) for h in r.json()["hits"]]
        assert [Path(answers[q][0][0]).stem for q in answers] == ["chelsea", "coffee", "rocket"]
        cat = (root / "chelsea.png").read_bytes()
        r = http.post("/collections/demo/search/image", files={"file": ("cat.png", cat)}, data={"top": "1"})
        hit = r.json()["hits"][0]
        assert Path(hit["id"]).stem == "chelsea" and hit["cosine"] > 0.999
        r = http.get(f"/collections/demo/records/{hit['id']}/thumbnail", params={"size": 64})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(r.content)).size) == 64
    assert srv.stop() in (0, -15)
    with Engine(srv.home) as eng:
        col = eng.open("demo", read_only=True)
        for q, hits in answers.items():
            mine = [(h.id, round(h.score, 6), round(h.cosine, 6)) for h in col.search(q, top=3).hits]
            assert [m[0] for m in mine] == [h[0] for h in hits]
            assert np.allclose([m[1:] for m in mine], [h[1:] for h in hits], atol=1e-5)
