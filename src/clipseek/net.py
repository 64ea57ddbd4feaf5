"""Downloading an image from an http(s) URL, safely.

:func:`fetch_url` is the one way clipseek downloads (URL queries now, URL ingest later). It keeps
three promises:

- an overall deadline: the whole download (connect, headers, body, redirects) ends within
  ``timeout`` seconds, however slowly a server drips bytes;
- a size cap: more than ``max_bytes`` is refused;
- no requests to the machine's own network: a host that resolves to a loopback, link-local,
  private, multicast, reserved or unspecified address is refused, checked when connecting (so a
  DNS answer cannot change between the check and the connection) and again after each redirect
  (at most ``MAX_REDIRECTS``). ``allow_private=True`` or ``CLIPSEEK_ALLOW_PRIVATE_URLS=1`` lifts it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import urllib.parse

from .errors import BadImage

URL_TIMEOUT = 20.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 5
ALLOW_PRIVATE_ENV = "CLIPSEEK_ALLOW_PRIVATE_URLS"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class _Refused(Exception):
    """A host resolved to an address we may not contact (raised inside the connection)."""


def private_urls_allowed(allow_private: bool | None = None) -> bool:
    """``allow_private`` when given, else the ``CLIPSEEK_ALLOW_PRIVATE_URLS`` environment variable."""
    if allow_private is not None:
        return allow_private
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (a seam: tests fake DNS here)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def connect(address: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection to an already checked address (a seam for tests)."""
    return socket.create_connection((address, port), timeout)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def fetch_url(
    url: str,
    *,
    timeout: float = URL_TIMEOUT,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    allow_private: bool | None = None,
) -> bytes:
    """Download ``url`` (following at most 5 redirects) within ``timeout`` seconds in all.

    Raises BadImage naming the URL and the reason: a scheme other than http(s), an HTTP error, a
    refused (private) address, too many redirects, more than ``max_bytes``, or the deadline passed.
    """
    import http.client  # here, not at module level: it costs a text query's start 10+ ms

    deadline = time.monotonic() + timeout
    private_ok = private_urls_allowed(allow_private)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get(url, current, deadline, timeout, max_bytes, private_ok)
        if location is None:
            if status != 200:
                raise BadImage(f"{url}: HTTP {status} {http.client.responses.get(status, '')}".rstrip())
            return body
        current = urllib.parse.urljoin(current, location)
    raise BadImage(f"{url}: more than {MAX_REDIRECTS} redirects")


def _get(
    url: str, current: str, deadline: float, timeout: float, max_bytes: int, private_ok: bool
) -> tuple[int, str | None, bytes]:
    """One GET of ``current``: (status, redirect location or None, body)."""
    import http.client

    parts = urllib.parse.urlsplit(current)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        where = "" if current == url else f" (redirected to {current})"
        raise BadImage(f"{url}: only http:// and https:// URLs are supported{where}")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadImage(f"{url}: bad port in {current}") from None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BadImage(f"{url}: download took longer than {timeout:g} s")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=remaining)

    def guarded(address: tuple[str, int], conn_timeout: float | None = None, source: object = None) -> socket.socket:
        addresses = resolve(host, port)
        if not private_ok:
            bad = [a for a in addresses if not is_public(a)]
            if bad:
                raise _Refused(bad[0])
        return connect(addresses[0], port, max(0.001, deadline - time.monotonic()))

    conn._create_connection = guarded  # type: ignore[attr-defined]
    # A server that drips bytes defeats per-read timeouts: at the deadline, close the connection.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(remaining, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn.request("GET", path, headers={"User-Agent": "clipseek", "Accept": "image/*"})
        resp = conn.getresponse()
        if resp.status in _REDIRECTS and resp.getheader("Location"):
            return resp.status, resp.getheader("Location"), b""
        if resp.status != 200:
            return resp.status, None, b""
        declared = resp.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise BadImage(f"{url}: larger than {max_bytes:,} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            if conn.sock is not None:
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise BadImage(f"{url}: larger than {max_bytes:,} bytes")
            chunks.append(chunk)
            if time.monotonic() >= deadline:
                expired.set()
                break
        if expired.is_set():
            raise BadImage(f"{url}: download took longer than {timeout:g} s")
        return resp.status, None, b"".join(chunks)
    except _Refused as e:
        raise BadImage(
            f"{url}: refused: {host} resolves to {e.args[0]}, a local or private address; "
            f"pass allow_private_urls=True (CLI: --allow-private-urls, or {ALLOW_PRIVATE_ENV}=1) to allow it"
        ) from None
    except BadImage:
        raise
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set() or isinstance(e, TimeoutError):
            raise BadImage(f"{url}: download took longer than {timeout:g} s") from None
        raise BadImage(f"{url}: cannot download ({getattr(e, 'reason', None) or e})") from None
    finally:
        watchdog.cancel()
        conn.close()
