"""/metrics: request counts by route template and status, latency histograms, search timings, records
written, ingest progress, encoder batches and collection sizes, each app in its own registry; access."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from clipseek import Engine  # noqa: E402
from clipseek.server import Settings, create_app  # noqa: E402


def scrape(client: TestClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(values: dict, name: str, **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def app_and_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = Engine(tmp_path / "data")
    app = create_app(engine, Settings(data_dir=str(tmp_path / "data")))
    yield app, engine
    engine.close()


def test_requests_counted_by_route_template_not_raw_path(app_and_engine) -> None:  # type: ignore[no-untyped-def]
    app, _ = app_and_engine

    @app.get("/probe/{item_id}")
    def probe(item_id: str) -> dict[str, str]:
        if item_id == "boom":
            raise RuntimeError("boom")
        return {"id": item_id}

    with TestClient(app, raise_server_exceptions=False) as client:
        for i in range(5):
            assert client.get(f"/probe/id-{i}").status_code == 200
        assert client.get("/probe/boom").status_code == 500
        assert client.get("/healthz").status_code == 200
        assert client.get("/no/such/path/123").status_code == 404
        assert client.get("/no/such/path/456").status_code == 404
        m = scrape(client)

    assert sample(m, "clipseek_http_requests_total", method="GET", route="/probe/{item_id}", status="200") == 5
    assert sample(m, "clipseek_http_requests_total", method="GET", route="/probe/{item_id}", status="500") == 1
    assert sample(m, "clipseek_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert sample(m, "clipseek_http_requests_total", method="GET", route="<unmatched>", status="404") == 2
    # no raw path became a label
    routes = {dict(labels).get("route") for (name, labels) in m if name == "clipseek_http_requests_total"}
    assert routes == {"/probe/{item_id}", "/healthz", "<unmatched>"}
    # the latency histogram per route: 6 observations under /probe/{item_id}, all under 10 s
    assert sample(m, "clipseek_http_request_duration_seconds_count", method="GET", route="/probe/{item_id}") == 6
    assert sample(m, "clipseek_http_request_duration_seconds_bucket", method="GET", route="/probe/{item_id}", le="10.0") == 6
    assert sample(m, "clipseek_http_request_duration_seconds_bucket", method="GET", route="/probe/{item_id}", le="+Inf") == 6
    # the scrape itself is in flight while it renders
    assert sample(m, "clipseek_http_requests_in_flight") == 1


def test_body_limit_refusals_are_counted(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data")
    app = create_app(engine, Settings(data_dir=str(tmp_path / "data"), max_body_mb=0.001))
    with TestClient(app) as client:
        r = client.post("/anything", content=b"x" * 5000)
        assert r.status_code == 413
        m = scrape(client)
    assert sample(m, "clipseek_http_requests_total", method="POST", route="<unmatched>", status="413") == 1
    engine.close()


def test_collection_sizes_and_search_timings(app_and_engine) -> None:  # type: ignore[no-untyped-def]
    app, engine = app_and_engine
    state = app.state.clipseek
    a = engine.create("alpha", dim=4)
    a.add_vectors(["x", "y", "z"], np.eye(4, dtype=np.float32)[:3])
    engine.create("beta", dim=4)
    engine.close()  # the scrape opens them itself, as a fresh server would

    with TestClient(app) as client:
        m = scrape(client)
        assert sample(m, "clipseek_collection_records", collection="alpha") == 3
        assert sample(m, "clipseek_collection_records", collection="beta") == 0
        assert sample(m, "clipseek_collections") == 2

        col = state.collection("alpha")
        result = col.search(vector=[1, 0, 0, 0], top=2)
        assert [h.id for h in result.hits][0] == "x"
        result.encode_ms, result.search_ms = 3.0, 40.0  # known values, to find them in the buckets
        state.emit("search", collection="alpha", result=result)
        col.add_vectors(["w"], [[0, 0, 0, 1]])
        state.emit("records_written", collection="alpha", count=1)
        m = scrape(client)

    assert sample(m, "clipseek_searches_total", collection="alpha", kind="vector") == 1
    assert sample(m, "clipseek_query_encode_seconds_sum", kind="vector") == pytest.approx(0.003)
    assert sample(m, "clipseek_query_encode_seconds_bucket", kind="vector", le="0.0025") == 0
    assert sample(m, "clipseek_query_encode_seconds_bucket", kind="vector", le="0.005") == 1
    assert sample(m, "clipseek_query_search_seconds_sum", kind="vector") == pytest.approx(0.040)
    assert sample(m, "clipseek_query_search_seconds_bucket", kind="vector", le="0.025") == 0
    assert sample(m, "clipseek_query_search_seconds_bucket", kind="vector", le="0.05") == 1
    assert sample(m, "clipseek_records_written_total", collection="alpha") == 1
    assert sample(m, "clipseek_collection_records", collection="alpha") == 4


def test_ingest_progress_from_job_events(app_and_engine) -> None:  # type: ignore[no-untyped-def]
    app, _ = app_and_engine
    state = app.state.clipseek
    job = {"id": "j1", "collection": "photos", "state": "running", "done": 0, "rate": 0.0}
    for done, rate in ((10, 5.0), (30, 7.5), (30, 7.5)):  # a repeated step adds nothing
        state.emit("job", job={**job, "done": done, "rate": rate})
    state.emit("job", job={**job, "id": "j2", "done": 4, "rate": 2.0})
    with TestClient(app) as client:
        m = scrape(client)
        assert sample(m, "clipseek_ingest_items_total", collection="photos") == 34
        assert sample(m, "clipseek_ingest_rate_items_per_second", collection="photos") == 9.5
        assert sample(m, "clipseek_ingest_jobs", state="running") == 2
        state.emit("job", job={**job, "state": "done", "done": 42, "rate": 6.0})
        state.emit("job", job={**job, "id": "j2", "state": "failed", "done": 4, "rate": 2.0})
        m = scrape(client)
    assert sample(m, "clipseek_ingest_items_total", collection="photos") == 46
    assert sample(m, "clipseek_ingest_rate_items_per_second", collection="photos") == 0
    assert sample(m, "clipseek_ingest_jobs", state="done") == 1
    assert sample(m, "clipseek_ingest_jobs", state="failed") == 1
    assert sample(m, "clipseek_ingest_jobs", state="running") is None


def test_encoder_batches_are_observed(app_and_engine) -> None:  # type: ignore[no-untyped-def]
    app, _ = app_and_engine
    state = app.state.clipseek
    state.emit("encoder_batch", kind="text", size=5, seconds=0.02)
    state.emit("encoder_batch", kind="text", size=1, seconds=0.004)
    with TestClient(app) as client:
        m = scrape(client)
    assert sample(m, "clipseek_encoder_batch_size_count", kind="text") == 2
    assert sample(m, "clipseek_encoder_batch_size_sum", kind="text") == 6
    assert sample(m, "clipseek_encoder_batch_size_bucket", kind="text", le="4.0") == 1
    assert sample(m, "clipseek_encoder_batch_seconds_sum", kind="text") == pytest.approx(0.024)


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    e1, e2 = Engine(tmp_path / "one"), Engine(tmp_path / "two")
    app1 = create_app(e1, Settings(data_dir=str(tmp_path / "one")))
    app2 = create_app(e2, Settings(data_dir=str(tmp_path / "two")))
    with TestClient(app1) as c1, TestClient(app2) as c2:
        for _ in range(3):
            c1.get("/healthz")
        c2.get("/healthz")
        m1, m2 = scrape(c1), scrape(c2)
    assert sample(m1, "clipseek_http_requests_total", method="GET", route="/healthz", status="200") == 3
    assert sample(m2, "clipseek_http_requests_total", method="GET", route="/healthz", status="200") == 1
    e1.close()
    e2.close()


def test_metrics_need_a_read_key_when_keys_exist_unless_public(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data")
    app = create_app(engine, Settings(data_dir=str(tmp_path / "data")))
    key, _ = app.state.clipseek.keys.create(name="scraper", read_only=True)
    with TestClient(app) as client:
        r = client.get("/metrics")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401

    public = create_app(engine, Settings(data_dir=str(tmp_path / "data"), metrics_public=True))
    with TestClient(public) as client:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert "clipseek_http_requests_total" in r.text
    engine.close()


def test_rest_requests_show_up_by_template_with_their_searches_and_writes(app_and_engine) -> None:  # type: ignore[no-untyped-def]
    app, _ = app_and_engine
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "caps", "dimension": 3}).status_code == 201
        recs = [{"id": f"c{i}", "vector": [1.0, float(i), 0.0]} for i in range(4)]
        assert client.post("/v1/collections/caps/records", json={"records": recs}).json()["upserted"] == 4
        for i in range(3):
            r = client.get(f"/v1/collections/caps/records/c{i}")
            assert r.status_code == 200
        assert client.get("/v1/collections/caps/records/nope").status_code == 404
        hits = client.post("/v1/collections/caps/search", json={"vector": [1, 0, 0], "top": 2}).json()["hits"]
        assert [h["id"] for h in hits] == ["c0", "c1"]
        m = scrape(client)
    routes = {dict(labels)["route"] for (name, labels) in m if name == "clipseek_http_requests_total"}
    assert not any("c0" in r or "caps" in r or "nope" in r for r in routes), routes  # templates, never values
    (get_record,) = [r for r in routes if r.startswith("/v1/collections/{name}/records/{id")]
    assert sample(m, "clipseek_http_requests_total", method="GET", route=get_record, status="200") == 3
    assert sample(m, "clipseek_http_requests_total", method="GET", route=get_record, status="404") == 1
    assert sample(m, "clipseek_http_requests_total", method="POST", route="/v1/collections/{name}/search", status="200") == 1
    assert sample(m, "clipseek_searches_total", collection="caps", kind="vector") == 1
    assert sample(m, "clipseek_query_search_seconds_count", kind="vector") == 1
    assert sample(m, "clipseek_records_written_total", collection="caps") == 4
    assert sample(m, "clipseek_collection_records", collection="caps") == 4


def test_an_ingest_job_through_the_api_is_counted(tmp_path: Path, photo_dir: Path) -> None:
    import time

    engine = Engine(tmp_path / "data")
    app = create_app(engine, Settings(data_dir=str(tmp_path / "data"), roots=[str(photo_dir)]))
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "pics", "model": "test-colors"}).status_code == 201
        r = client.post("/v1/collections/pics/index", json={"source": str(photo_dir)})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["state"] == "done", job
        m = scrape(client)
    # the 5 visible images of photo_dir (hidden files and notes.txt are not listed)
    assert job["done"] == 5
    assert sample(m, "clipseek_ingest_items_total", collection="pics") == 5
    assert sample(m, "clipseek_ingest_jobs", state="done") == 1
    assert sample(m, "clipseek_ingest_rate_items_per_second", collection="pics") == 0
    assert sample(m, "clipseek_records_written_total", collection="pics") == 5
    assert sample(m, "clipseek_collection_records", collection="pics") == 5
    engine.close()
