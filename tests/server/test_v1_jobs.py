"""Background ingest jobs over /v1: progress, one job per collection, roots, shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from clipseek.engine import Engine


def wait_job(client, job_id: str, timeout: float = 60) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def blocker(client) -> tuple[threading.Event, threading.Event]:  # type: ignore[no-untyped-def]
    """Hold every job at its first 'job' event (on the job's thread) until released."""
    started, release = threading.Event(), threading.Event()

    def hold(job: dict[str, Any]) -> None:
        if job["state"] == "running" and not started.is_set():
            started.set()
            release.wait(30)

    client.app.state.clipseek.on("job", hold)
    return started, release


def test_index_job_creates_fills_and_reports(engine: Engine, make_client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    c = make_client(roots=[str(photo_dir.parent)], model="test-colors")
    events: list[dict[str, Any]] = []
    c.app.state.clipseek.on("job", lambda job: events.append(job))
    r = c.post("/v1/collections/p/index", json={"source": str(photo_dir), "options": {"labels": ["red", "blue"]}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["collection"] == "p" and job["source"] == str(photo_dir) and job["state"] in ("queued", "running", "done")
    done = wait_job(c, job["id"])
    assert done["state"] == "done" and done["error"] is None
    assert done["done"] == 5 and done["total"] == 5 and done["failed"] == 0
    assert done["report"]["added"] == 5 and done["report"]["failed"] == []
    assert done["started_at"] and done["finished_at"] and done["rate"] > 0
    assert engine.open("p").count() == 5 and engine.open("p").encoder_info.name == "test-colors"
    red = engine.open("p").get(str(photo_dir.resolve() / "red.jpg"))
    assert red["metadata"]["labels"] == ["red"]
    assert events[0]["state"] == "running" and events[-1]["state"] == "done" and events[-1]["done"] == 5
    assert c.get("/v1/jobs").json()["jobs"][0]["id"] == job["id"]
    assert c.get("/v1/collections/p").json()["last_run"]["added"] == 5
    # a second run finds everything unchanged
    again = wait_job(c, c.post("/v1/collections/p/index", json={"source": "photos"}).json()["id"])
    assert again["report"]["unchanged"] == 5 and again["report"]["added"] == 0
    r = c.get("/v1/jobs/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"


def test_one_job_per_collection(engine: Engine, make_client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine.create("p", model="test-colors")
    c = make_client(roots=[str(photo_dir)])
    started, release = blocker(c)
    first = c.post("/v1/collections/p/index", json={"source": str(photo_dir)}).json()
    assert started.wait(10)
    try:
        r = c.post("/v1/collections/p/index", json={"source": str(photo_dir)})
        assert r.status_code == 409 and r.json()["error"] == {
            "code": "job_running",
            "message": f"job {first['id']} is already indexing into collection 'p'; "
            f"wait for it to finish (GET /v1/jobs/{first['id']})",
        }
        assert c.get("/v1/collections/p").json()["job"] == first["id"]
        assert c.get(f"/v1/jobs/{first['id']}").json()["state"] == "running"
        r = c.delete("/v1/collections/p")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_running"
    finally:
        release.set()
    assert wait_job(c, first["id"])["state"] == "done"
    assert c.get("/v1/collections/p").json()["job"] is None


def test_job_sources_stay_inside_the_roots(engine: Engine, make_client, photo_dir: Path, tmp_path: Path, make_image) -> None:  # type: ignore[no-untyped-def]
    outside = make_image(tmp_path / "outside" / "o.png")
    root = tmp_path / "root"
    make_image(root / "in.png")
    (root / "link.png").symlink_to(outside)
    (root / "list.txt").write_text(f"in.png\n{outside}\n../outside/o.png\n")
    c = make_client(roots=[str(root)], model="test-colors")
    r = c.post("/v1/collections/p/index", json={"source": str(tmp_path / "outside")})
    assert r.status_code == 403 and r.json()["error"]["code"] == "outside_roots"
    r = c.post("/v1/collections/p/index", json={"source": "../outside"})
    assert r.status_code == 403
    r = c.post("/v1/collections/p/index", json={"source": "missing"})
    assert r.status_code == 404 and "missing: no such file or folder inside the roots" in r.json()["error"]["message"]
    r = c.post("/v1/collections/p/index", json={"source": "https://example.com/list.csv"})
    assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]
    assert engine.names() == []
    # a folder: its symlink pointing out is skipped, not followed
    job = wait_job(c, c.post("/v1/collections/p/index", json={"source": str(root)}).json()["id"])
    assert job["state"] == "done" and job["report"]["added"] == 1
    assert [(f["reason"], f["source"]) for f in job["report"]["failed"]] == [("outside_roots", str(root / "link.png"))]
    # a manifest inside the root listing files outside it
    job = wait_job(c, c.post("/v1/collections/m/index", json={"source": "list.txt"}).json()["id"])
    assert job["state"] == "done" and job["report"]["added"] == 1, job["report"]
    assert sorted(f["reason"] for f in job["report"]["failed"]) == ["outside_roots", "outside_roots"]
    assert job["failed"] == 2
    assert engine.open("m").store.ids() == [str(root.resolve() / "in.png")]


def test_shutdown_stops_a_running_job_cleanly(engine: Engine, make_client, photo_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine.create("p", model="test-colors")
    c = make_client(roots=[str(photo_dir)])
    started, release = blocker(c)
    r = c.post("/v1/collections/p/index", json={"source": str(photo_dir), "options": {"batch_size": 2}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert started.wait(10)
    jobs = c.app.state.clipseek.extras["jobs"]
    # let the job go on once the shutdown has asked it to stop
    threading.Thread(target=lambda: (jobs.get(job_id).cancel.wait(30), release.set()), daemon=True).start()
    c.__exit__(None, None, None)  # the lifespan's shutdown: asks the job to stop and waits for it
    job = jobs.get(job_id).to_dict()
    assert job["state"] == "cancelled" and "server shut down" in job["error"]
    with Engine(engine.data_dir) as other:
        kept = other.open("p", read_only=True).count()
    assert kept == 2 == job["report"]["added"]  # the batch encoded before the stop was committed
    # a new server resumes: the committed records are unchanged, the rest are added
    c2 = make_client(roots=[str(photo_dir)])
    again = wait_job(c2, c2.post("/v1/collections/p/index", json={"source": str(photo_dir)}).json()["id"])
    assert again["report"]["unchanged"] == 2 and again["report"]["added"] == 3
