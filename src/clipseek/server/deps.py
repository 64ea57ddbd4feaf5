"""What every route shares: the :class:`State` (one Engine, one model per name, the settings, the
key store, the rate limiter) and the access dependencies ``Reader`` / ``Writer``.

Routes declare ``key: Reader`` or ``key: Writer`` and get the caller's key (None when access is
open); the dependency answers 401 (no or unknown key), 403 (a read-only key writing) or 429 (rate).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import Depends, Request

from ..engine import Collection, Engine
from .errors import ApiError
from .keys import KeyInfo, KeyStore
from .settings import Settings


class RateLimiter:
    """A token bucket per caller: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_time(self, who: str, now: float | None = None) -> float:
        """0 when ``who`` may go now (a token is taken), else the seconds until a token is free."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate


@dataclass
class State:
    engine: Engine
    settings: Settings
    keys: KeyStore
    limiter: RateLimiter
    started: float = field(default_factory=time.time)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    extras: dict[str, Any] = field(default_factory=dict)  # per-feature state (jobs, batcher, metrics)

    def on(self, event: str, listener: Callable[..., None]) -> None:
        """Call ``listener(**data)`` on every ``emit(event, **data)`` (metrics, logs, watch-lists)."""
        self.extras.setdefault("listeners", {}).setdefault(event, []).append(listener)

    def emit(self, event: str, **data: Any) -> None:
        """Tell listeners something happened. Events: ``search`` (collection: str, result:
        SearchResult), ``records_written`` (collection: str, count: int), ``job`` (job: the job's
        JSON dict, on every progress step and at its end). A failing listener is logged, never raised."""
        for listener in self.extras.get("listeners", {}).get(event, []):
            try:
                listener(**data)
            except Exception:  # noqa: BLE001
                logging.getLogger("clipseek.server").exception("listener for %r failed", event)

    def collection(self, name: str) -> Collection:
        """An open collection (opened once, for reading and writing, shared by all requests)."""
        with self._lock:
            return self.engine.open(name)

    def auth_required(self) -> bool:
        if self.settings.auth == "on":
            return True
        if self.settings.auth == "off":
            return False
        return bool(self.keys.list()) or not self.settings.local_only

    def roots(self) -> list[Path]:
        return self.settings.root_paths()


def get_state(request: Request) -> State:
    return request.app.state.clipseek  # type: ignore[no-any-return]


StateDep = Annotated[State, Depends(get_state)]


def presented_key(request: Request) -> str | None:
    """The key a request carries: ``Authorization: Bearer K``, ``X-API-Key: K`` or ``Api-Key: K``
    (the header the Pinecone client sends)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.headers.get("api-key") or None


def _access(request: Request, state: State, write: bool) -> KeyInfo | None:
    info: KeyInfo | None = None
    if state.auth_required():
        key = presented_key(request)
        if not key:
            raise ApiError(
                401,
                "unauthorized",
                "this server needs an API key: send 'Authorization: Bearer <key>' (create one with `clipseek keys create`)",
                {"WWW-Authenticate": "Bearer"},
            )
        info = state.keys.check(key)
        if info is None:
            raise ApiError(401, "unauthorized", "unknown API key", {"WWW-Authenticate": "Bearer"})
        if write and info.read_only:
            raise ApiError(403, "forbidden", f"API key {info.id} is read-only; this request changes data")
    who = info.id if info else f"addr:{request.client.host if request.client else '?'}"
    wait = state.limiter.wait_time(who)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests: at most {state.settings.rate_limit:g} per second; retry in {wait:.1f} s",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.key_id = info.id if info else None
    return info


def require_read(request: Request) -> KeyInfo | None:
    return _access(request, get_state(request), write=False)


def require_write(request: Request) -> KeyInfo | None:
    return _access(request, get_state(request), write=True)


Reader = Annotated[KeyInfo | None, Depends(require_read)]
Writer = Annotated[KeyInfo | None, Depends(require_write)]
