"""Serving a test HTTP server on a thread for the length of a ``with`` block."""

from __future__ import annotations

import socketserver
import threading
from contextlib import contextmanager
from typing import Iterator, TypeVar

S = TypeVar("S", bound=socketserver.BaseServer)


@contextmanager
def serving(srv: S) -> Iterator[S]:
    """Run ``srv.serve_forever`` on a daemon thread; on exit, stop it and close its socket."""
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
