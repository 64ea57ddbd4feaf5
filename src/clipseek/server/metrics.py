"""Prometheus metrics at ``/metrics``.

Every app has its own :class:`~prometheus_client.CollectorRegistry` (never the process-global one),
so several apps in one process (tests, an embedding program) count separately.

What is measured, and where it comes from:

* HTTP requests by method, route *template* (``/v1/collections/{name}/search``, never the raw path,
  so ids cannot explode the label space; requests no route matched are ``<unmatched>``) and status,
  latency histograms per route and requests in flight: :class:`MetricsMiddleware`;
* query encode and search time per query kind: the ``search`` event (``SearchResult.encode_ms``,
  ``search_ms``);
* records written per collection: the ``records_written`` event;
* ingest progress per collection (items done, the latest rate) and jobs by state: the ``job`` event;
* encoder batches (how many queries each model call served): the ``encoder_batch`` event of
  :mod:`clipseek.server.batching`;
* collection sizes: read at scrape time from the collections' stores (a count each, no scan).

Access: ``/metrics`` follows the same rule as reads (a read key when keys are required) unless the
setting ``metrics_public`` is true, which opens it to anyone who can reach the port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ClipseekError
from .deps import State, require_read

log = logging.getLogger("clipseek.server")

UNMATCHED = "<unmatched>"
#: request latency buckets (seconds): cached searches take milliseconds, uploads and cold models seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The metric objects of one app, in their own registry."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "clipseek_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "clipseek_http_request_duration_seconds",
            "Time from a request's arrival to its last response byte",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("clipseek_http_requests_in_flight", "Requests being answered now", registry=r)
        self.searches = Counter(
            "clipseek_searches", "Searches answered", ["collection", "kind"], registry=r
        )
        self.encode = Histogram(
            "clipseek_query_encode_seconds",
            "Turning a query into a vector (the model, for text and image queries)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.search = Histogram(
            "clipseek_query_search_seconds",
            "The store's search of one query, filters included",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.written = Counter(
            "clipseek_records_written", "Records inserted or replaced", ["collection"], registry=r
        )
        self.ingested = Counter(
            "clipseek_ingest_items", "Items processed by ingest jobs", ["collection"], registry=r
        )
        self.ingest_rate = Gauge(
            "clipseek_ingest_rate_items_per_second",
            "Items per second of the collection's running ingest jobs (0 when none runs)",
            ["collection"],
            registry=r,
        )
        self.batch_size = Histogram(
            "clipseek_encoder_batch_size",
            "Queries served by one model call (concurrent queries are batched)",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "clipseek_encoder_batch_seconds", "Time of one batched model call", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self._jobs: dict[str, dict[str, Any]] = {}  # job id -> {"collection", "state", "done", "rate"}
        self._jobs_lock = threading.Lock()
        r.register(_StateCollector(state, self))

    # ------------------------------------------------------------------ event listeners

    def on_search(self, collection: str, result: Any, **_: Any) -> None:
        kind = str((getattr(result, "query", None) or {}).get("kind", "other"))
        self.searches.labels(collection, kind).inc()
        self.encode.labels(kind).observe(float(result.encode_ms) / 1000.0)
        self.search.labels(kind).observe(float(result.search_ms) / 1000.0)

    def on_records_written(self, collection: str, count: int, **_: Any) -> None:
        if count > 0:
            self.written.labels(collection).inc(count)

    def on_job(self, job: dict[str, Any], **_: Any) -> None:
        jid = str(job.get("id"))
        collection = str(job.get("collection"))
        done = int(job.get("done") or 0)
        state = str(job.get("state") or "unknown")
        rate = float(job.get("rate") or 0.0)
        with self._jobs_lock:
            before = self._jobs.get(jid, {"done": 0})
            if done > before["done"]:
                self.ingested.labels(collection).inc(done - before["done"])
            self._jobs[jid] = {"collection": collection, "state": state, "done": max(done, before["done"]), "rate": rate}
            running = [j["rate"] for j in self._jobs.values() if j["collection"] == collection and j["state"] == "running"]
        self.ingest_rate.labels(collection).set(sum(running))

    def on_encoder_batch(self, kind: str, size: int, seconds: float, **_: Any) -> None:
        self.batch_size.labels(kind).observe(size)
        self.batch_seconds.labels(kind).observe(seconds)

    def jobs_by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._jobs_lock:
            for j in self._jobs.values():
                out[j["state"]] = out.get(j["state"], 0) + 1
        return out


class _StateCollector(Collector):
    """Values read at scrape time: collection sizes and counts of jobs by state."""

    def __init__(self, state: State, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # values depend on the data folder: no fixed description, nothing read at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sizes = GaugeMetricFamily("clipseek_collection_records", "Records in the collection", labels=["collection"])
        try:
            names = self.state.engine.names()
        except OSError:
            names = []
        for name in names:
            try:
                # the server's shared open collection (what every request uses): a count, no scan
                n = self.state.collection(name).count()
            except (ClipseekError, OSError) as e:  # damaged, or held open by another process
                log.debug("metrics: no count for collection %r: %s", name, e)
                continue
            sizes.add_metric([name], float(n))
        yield sizes
        yield GaugeMetricFamily("clipseek_collections", "Collections in the data folder", value=float(len(names)))
        jobs = GaugeMetricFamily("clipseek_ingest_jobs", "Ingest jobs this process has seen, by state", labels=["state"])
        for st, n in sorted(self.metrics.jobs_by_state().items()):
            jobs.add_metric([st], float(n))
        yield jobs


class MetricsMiddleware:
    """Counts every HTTP request by method, route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's top-level routes (a list, read at each request: routes added later count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        t0 = time.perf_counter()
        status = 500
        m = self.metrics

        async def counting_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            m.in_flight.dec()
            route = route_template(scope, root_path, self.routes)
            method = str(scope.get("method", ""))
            m.requests.labels(method, route, str(status)).inc()
            m.latency.labels(method, route).observe(time.perf_counter() - t0)


def route_template(scope: Scope, root_path: str, routes: Any) -> str:
    """The template of the route that answered (``/v1/collections/{name}``), never the raw path.

    Starlette leaves the innermost matched route in ``scope["route"]``; inside a mounted sub-app its
    path is relative to the mount, so then the top-level route is matched again here."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    if scope.get("root_path", "") == root_path:
        path = getattr(route, "path", None)
        if isinstance(route, Mount):
            return f"{route.path}/{{path}}"
        return str(path) if path is not None else UNMATCHED
    probe = {**scope, "root_path": root_path}
    for top in routes:
        match, _ = top.matches(probe)
        if match is Match.FULL:
            return f"{top.path}/{{path}}" if isinstance(top, Mount) else str(top.path)
    return UNMATCHED


def install(app: FastAPI, state: State) -> Metrics:
    """Add the metrics, their event listeners and the ``/metrics`` route (the middleware: :func:`add_middleware`)."""
    metrics = Metrics(state)
    state.extras["metrics"] = metrics
    state.on("search", metrics.on_search)
    state.on("records_written", metrics.on_records_written)
    state.on("job", metrics.on_job)
    state.on("encoder_batch", metrics.on_encoder_batch)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    )
    def metrics_route(request: Request) -> Response:
        if not state.settings.metrics_public:
            require_read(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def add_middleware(app: FastAPI, metrics: Metrics) -> None:
    """Count and time every request (called by ``create_app`` outside the body limit, so its 413s count)."""
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
