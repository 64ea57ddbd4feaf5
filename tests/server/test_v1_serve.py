"""`clipseek serve` as a real process: HTTP over a socket, refusal to listen openly without keys."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
from _serving import LiveServer, free_port, server_env

from clipseek.engine import Engine


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
