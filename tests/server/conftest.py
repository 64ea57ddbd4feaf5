"""Fixtures shared by the service tests (REST API, Pinecone-compatible API, web page, operations).

In-process (fast, no network; the app runs in this process and sees the test encoders):

- ``settings_factory(**overrides)`` -> :class:`~clipseek.server.Settings` for ``data_dir`` = the
  ``engine`` fixture's folder (host 127.0.0.1, so access is open until a key is created).
- ``make_client(engine=None, **settings)`` -> a started ``fastapi.testclient.TestClient`` on
  ``create_app(engine, settings)`` (lifespan run, so shutdown hooks run when the test ends).
- ``client``: ``make_client()`` with the ``engine`` fixture and default settings.
- ``api_key(read_only=False)``: creates a key in the engine's key store and returns the
  headers to send it with (``{"Authorization": "Bearer csk_..."}``).

A real server (a ``clipseek serve`` subprocess under uvicorn, for clients that need a socket:
the Pinecone client, Chromium, Locust):

- ``serve(home=None, args=(), env=None, timeout=60)`` -> :class:`LiveServer` (``.url``,
  ``.home``, ``.port``, ``.proc``, ``.log()``). Starts ``python -m clipseek serve --port <free port>``
  on 127.0.0.1 with ``CLIPSEEK_HOME=home`` (default: a fresh tmp folder), waits until ``/healthz``
  answers, and stops it (SIGTERM, then kill) when the test ends. Fill ``home`` first (index
  collections in-process with the offline model, create keys with ``KeyStore(home / "keys.json")``)
  to serve prepared data. The subprocess does not see the in-process ``test-colors`` encoder: use
  vector-only collections or ``model="offline"`` there.
- ``live_server``: ``serve()`` with defaults; its ``.url`` is the base URL (``http://127.0.0.1:PORT``).

The helpers live in ``tests/server/_serving.py`` (``from ._serving import LiveServer, start_server, free_port,
server_env``) for tests that start a server themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clipseek.engine import Engine
from clipseek.server import Settings, create_app
from clipseek.server.keys import KeyStore

from ._serving import LiveServer, start_server


@pytest.fixture
def settings_factory(engine: Engine) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", str(engine.data_dir))
        return Settings(**overrides)

    return make


@pytest.fixture
def make_client(engine: Engine, settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(eng: Engine | None = None, **settings: Any) -> TestClient:
        eng = eng or engine
        s = settings_factory(**{"data_dir": str(eng.data_dir), **settings})
        tc = TestClient(create_app(eng, s), raise_server_exceptions=False)
        tc.__enter__()  # runs the lifespan: shutdown hooks (jobs) run at exit
        clients.append(tc)
        return tc

    yield make
    for tc in reversed(clients):
        tc.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def api_key(engine: Engine) -> Callable[..., dict[str, str]]:
    def make(read_only: bool = False, name: str = "test") -> dict[str, str]:
        key, _ = KeyStore(engine.data_dir / "keys.json").create(name=name, read_only=read_only)
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(
        home: Path | None = None, args: Sequence[str] = (), env: dict[str, str] | None = None, timeout: float = 60
    ) -> LiveServer:
        home = Path(home) if home is not None else tmp_path_factory.mktemp("serve-home")
        srv = start_server(home, tmp_path_factory.mktemp("serve-log") / "server.log", args, env, timeout)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def live_server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()
