"""API keys: created once, shown once, stored only as SHA-256 hashes in ``<data_dir>/keys.json``.

A key is ``csk_`` + 32 random bytes (URL-safe base64), so a plain SHA-256 of it cannot be brute
forced; lookups compare hashes in constant time. A key is read-only or read-write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ClipseekError

PREFIX = "csk_"


@dataclass(frozen=True)
class KeyInfo:
    id: str  # short public handle (the first characters of the hash), for listing and revoking
    name: str
    read_only: bool
    created_at: str
    sha256: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[float, list[KeyInfo]] | None = None

    def _read(self) -> list[KeyInfo]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if self._cache and self._cache[0] == st.st_mtime_ns:
            return self._cache[1]
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))["keys"]
            keys = [KeyInfo(**r) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClipseekError(f"{self.path}: not a valid key file ({e}); fix or delete it") from None
        self._cache = (st.st_mtime_ns, keys)
        return keys

    def _write(self, keys: list[KeyInfo]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"keys": [asdict(k) for k in keys]}, f, indent=2)
        os.replace(tmp, self.path)
        self._cache = None

    def list(self) -> list[KeyInfo]:
        return list(self._read())

    def create(self, name: str = "", read_only: bool = False) -> tuple[str, KeyInfo]:
        """A new key: returns (the key itself, to show once; what is stored)."""
        key = PREFIX + secrets.token_urlsafe(32)
        digest = _hash(key)
        info = KeyInfo(
            id=digest[:12],
            name=name,
            read_only=read_only,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            sha256=digest,
        )
        with self._lock:
            self._write([*self._read(), info])
        return key, info

    def revoke(self, key_id: str) -> KeyInfo:
        with self._lock:
            keys = self._read()
            hit = [k for k in keys if k.id == key_id]
            if not hit:
                raise ClipseekError(f"no API key with id {key_id!r} (see `clipseek keys list`)")
            self._write([k for k in keys if k.id != key_id])
        return hit[0]

    def check(self, key: str) -> KeyInfo | None:
        """The stored key matching ``key``, or None."""
        digest = _hash(key)
        found = None
        for k in self._read():
            if hmac.compare_digest(k.sha256, digest):
                found = k
        return found
