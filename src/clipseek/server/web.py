"""The web page at ``/``: a static single page (``server/web/``) that talks only to the JSON API
under ``/v1`` (docs/api.md).

Nothing is built: the page is three hand-written files shipped as package data and read once at
start. Only those files are served, by name (no directory is exposed); every response carries a
Content-Security-Policy that allows scripts, styles and connections to this origin only and images
from this origin or from the browser's own ``blob:`` URLs (thumbnails fetched with a key, the
query image the user picked), so the page shows no image the collection's records did not provide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from fastapi import FastAPI, Request, Response

from .deps import State

# (URL path, file in server/web/, content type)
_FILES = (
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/web/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/web/style.css", "style.css", "text/css; charset=utf-8"),
    ("/web/icon.svg", "icon.svg", "image/svg+xml"),
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load(name: str, content_type: str) -> _Asset:
    body = resources.files(__package__).joinpath("web", name).read_bytes()
    return _Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _respond(asset: _Asset, request: Request) -> Response:
    headers = {
        "ETag": asset.etag,
        # revalidate every time: a new clipseek version never runs an old cached script
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CSP,
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def install(app: FastAPI, state: State) -> None:
    """Serve the page and its assets (no access check: the page holds no data; its API calls do)."""
    for path, name, content_type in _FILES:
        app.add_api_route(path, _route(_load(name, content_type)), methods=["GET"], include_in_schema=False, name=f"web:{name}")


def _route(asset: _Asset) -> Callable[[Request], Response]:
    def serve(request: Request) -> Response:
        return _respond(asset, request)

    return serve
