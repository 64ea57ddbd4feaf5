"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

clipseek's own errors map to statuses here, so routes raise the engine's exceptions and never
build error responses by hand; FastAPI's validation errors and unknown routes get the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as E

log = logging.getLogger("clipseek.server")


class ApiError(Exception):
    """An error with its HTTP status and a short machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Most specific first: the first isinstance match wins.
_MAP: list[tuple[type[Exception], int, str]] = [
    (E.CollectionNotFound, 404, "collection_not_found"),
    (E.RecordNotFound, 404, "record_not_found"),
    (E.CollectionExists, 409, "collection_exists"),
    (E.EncoderMismatch, 409, "encoder_mismatch"),
    (E.VectorOnly, 409, "vector_only"),
    (E.BadFilter, 400, "bad_filter"),
    (E.BadVector, 400, "bad_vector"),
    (E.DownloadError, 400, "download_failed"),
    (E.TooManyPixels, 413, "too_many_pixels"),
    (E.BadImage, 415, "bad_image"),
    (E.UnknownPlugin, 400, "unknown_plugin"),
    (E.ModelUnavailable, 503, "model_unavailable"),
    (E.StoreUnavailable, 503, "store_unavailable"),
    (E.CollectionDamaged, 500, "collection_damaged"),
    (E.ClipseekError, 400, "bad_request"),
]


def status_of(exc: Exception) -> tuple[int, str]:
    for cls, status, code in _MAP:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _response(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(E.ClipseekError)
    async def _clipseek_error(request: Request, exc: E.ClipseekError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        return _response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return _response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _response(500, "internal", "internal server error (see the server log)")
