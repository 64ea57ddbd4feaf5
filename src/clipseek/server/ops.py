"""Operations: ``/healthz`` (the process answers), ``/readyz`` (it can serve: the data folder is
readable), ``/metrics`` (:mod:`.metrics`) and query batching (:mod:`.batching`)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .deps import State


def install(app: FastAPI, state: State) -> None:
    from . import batching, metrics

    metrics.install(app, state)
    batching.install(state)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/readyz", tags=["operations"], summary="The server can answer queries")
    def readyz() -> JSONResponse:
        try:
            names = state.engine.names()
        except OSError as e:
            return JSONResponse({"status": "unavailable", "reason": str(e)}, status_code=503)
        return JSONResponse({"status": "ready", "collections": len(names)})
