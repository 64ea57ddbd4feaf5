"""``create_app(engine, settings)``: the FastAPI application behind ``clipseek serve``.

No application is built at import time: tests and embedding programs make their own with an
Engine of their choice. The app owns nothing global; everything lives on ``app.state.clipseek``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine
from ..errors import ClipseekError
from . import errors
from .deps import RateLimiter, State
from .errors import error_body
from .keys import KeyStore
from .settings import Settings

log = logging.getLogger("clipseek.server")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_json(send, 413, error_body("too_large", f"request body over the limit of {self.limit} bytes"))
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, error_body("too_large", f"request body over the limit of {self.limit} bytes"))


class _TooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


class RequestLog:
    """A request id on every response (``X-Request-Id``, taken from the request when it sends one)
    and one structured log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        t0 = time.perf_counter()
        status = 500

        async def send_with_id(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(msg)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "ms": round((time.perf_counter() - t0) * 1000, 2),
                },
            )


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """The clipseek service over ``engine`` (default: one on ``settings.data_dir``)."""
    settings = settings or Settings()
    if settings.auth == "off" and not settings.local_only:
        raise ClipseekError("auth = 'off' is allowed only when the server listens on localhost")
    engine = engine or Engine(settings.data_dir)
    state = State(
        engine=engine,
        settings=settings,
        keys=KeyStore(engine.data_dir / "keys.json"),
        limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Uvicorn has finished in-flight requests by now; let features stop their work, then flush.
        for stop in state.extras.get("on_shutdown", []):
            try:
                stop()
            except Exception:  # noqa: BLE001 - one failing hook must not skip the engine's close
                log.exception("shutdown hook failed")
        engine.close()

    app = FastAPI(
        title="clipseek",
        summary="Self-hosted image search with CLIP-family models",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.clipseek = state
    errors.install(app)

    from . import metrics, ops

    ops.install(app, state)
    _install_features(app, state)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    metrics.add_middleware(app, state.extras["metrics"])  # outside the body limit: its 413s are counted too
    app.add_middleware(RequestLog)
    return app


def _install_features(app: FastAPI, state: State) -> None:
    """The API surfaces, each in its own module with an ``install(app, state)``."""
    import importlib

    for name in ("v1", "pinecone", "web"):
        try:
            mod = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue  # not built yet
            raise
        mod.install(app, state)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("clipseek")
    except Exception:  # noqa: BLE001
        return "0"
