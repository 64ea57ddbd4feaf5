"""Downloading from http(s) URLs, safely: the one HTTP client clipseek uses (query images, URL ingest).

:class:`Downloader` (httpx underneath, imported on first use) keeps these promises for every URL:

- an overall deadline: one download (connect, headers, body, redirects, retries, waits) ends within
  ``Limits.deadline`` seconds, however slowly a server drips bytes; each connect and each read also
  has its own timeout;
- retries with exponential backoff and full jitter on timeouts, 429 and 5xx (``Retry-After`` is
  honoured, in seconds or as a date, when it ends before the deadline);
- a size cap enforced while streaming (``Content-Length`` is not trusted), and the first bytes must
  be an image Pillow recognises (an HTML error page is refused before the rest is downloaded);
- no requests to the machine's own network: a host that resolves to a loopback, link-local,
  private, multicast, reserved or unspecified address is refused, checked in the transport when
  connecting (the checked address is the one connected to, so a DNS answer cannot change in between)
  and so again after each redirect, followed here, at most ``MAX_REDIRECTS``.
  ``allow_private=True`` or ``CLIPSEEK_ALLOW_PRIVATE_URLS=1`` lifts it.

Every failure is a :class:`~clipseek.errors.DownloadError` naming the URL, with a short ``reason``
key (:data:`DOWNLOAD_REASONS`). :func:`fetch_url` is the one-shot form a URL query uses.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import socket
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ClipseekError, DownloadError

if TYPE_CHECKING:
    import httpx

URL_TIMEOUT = 20.0
MAX_DOWNLOAD_BYTES = 50_000_000
MAX_REDIRECTS = 5
ALLOW_PRIVATE_ENV = "CLIPSEEK_ALLOW_PRIVATE_URLS"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SNIFF = 16  # bytes Pillow's format checks look at

#: The ``reason`` keys a DownloadError carries (besides ``http_<status>``), for the ingest report.
DOWNLOAD_REASONS: dict[str, str] = {
    "bad_url": "not an http(s) URL, or a malformed one",
    "refused_address": "the host resolves to a loopback, link-local, private or multicast address",
    "too_many_redirects": f"more than {MAX_REDIRECTS} redirects",
    "timeout": "a connect or read timed out, or the whole download passed its deadline",
    "too_large": "the body is larger than the size limit",
    "not_an_image": "the first bytes are not an image format Pillow reads",
    "truncated": "the connection ended before the whole body arrived",
    "download_failed": "the connection failed (DNS, refused, TLS)",
}

# The deadline of the download running on this thread; the guarded stream clamps every read to it.
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("clipseek_download_deadline", default=float("inf"))


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds), size cap (bytes) and retry policy of one download."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 120.0
    max_bytes: int = MAX_DOWNLOAD_BYTES
    retries: int = 3
    backoff: float = 0.5  # the n-th retry waits a random time up to backoff * 2**(n-1)
    max_backoff: float = 30.0


class Sink(Protocol):
    """Where a body goes: ``reset`` starts over (a retry), ``write`` appends."""

    def reset(self) -> None: ...

    def write(self, data: bytes) -> object: ...


class BytesSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def reset(self) -> None:
        self.chunks.clear()

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)


class _Refused(Exception):
    """A host resolved to an address we may not contact (raised inside the connection)."""


class _Retry(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's wish, in seconds."""

    def __init__(self, error: DownloadError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


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


def looks_like_image(prefix: bytes) -> bool:
    """Whether the first bytes match a format Pillow reads (its own format checks, nothing decoded)."""
    from PIL import Image

    Image.preinit()
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:
            continue
        try:
            accepted = accept(prefix)
        except (IndexError, TypeError, ValueError):  # a check that wants more bytes than a tiny body has
            continue
        if accepted and not isinstance(accepted, str):  # a str is Pillow's "maybe" warning
            return True
    return False


def _remaining() -> float:
    return _DEADLINE.get() - time.monotonic()


def _transport(private_ok: bool, max_connections: int, sockets: weakref.WeakSet[socket.socket]) -> httpx.BaseTransport:
    """An httpx transport whose every TCP connection goes through :func:`_guarded_connect` (and
    is added to ``sockets``, so a cancel can wake reads blocked on them)."""
    import httpcore
    import httpx
    from httpcore._backends.sync import SyncStream

    class GuardedStream(SyncStream):
        """Reads and writes never wait past the running download's deadline."""

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return super().read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            super().write(buffer, _clamp(timeout, httpcore.WriteTimeout))

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            # The TLS stream must stay guarded (deadline, cancel): wrap its socket again.
            tls = super().start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
            sock = tls.get_extra_info("socket")
            sockets.add(sock)
            return GuardedStream(sock)

    class GuardedBackend(httpcore.SyncBackend):
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            limit = _clamp(timeout, httpcore.ConnectTimeout)
            try:
                sock = _guarded_connect(host, port, limit, private_ok)
            except TimeoutError as e:
                raise httpcore.ConnectTimeout(str(e)) from None
            except OSError as e:
                raise httpcore.ConnectError(str(e)) from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sockets.add(sock)
            return GuardedStream(sock)

    transport = httpx.HTTPTransport(trust_env=False)  # no proxies: they would connect for us, unchecked
    # httpx takes no network backend; its pool does (httpcore's public ConnectionPool).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        network_backend=GuardedBackend(),
    )
    return transport


def _clamp(timeout: float | None, timeout_error: type[Exception]) -> float:
    left = _remaining()
    if left <= 0:
        raise timeout_error("deadline passed")
    return left if timeout is None else min(timeout, left)


def _guarded_connect(host: str, port: int, timeout: float, private_ok: bool) -> socket.socket:
    addresses = resolve(host, port)
    if not private_ok:
        bad = [a for a in addresses if not is_public(a)]
        if bad:
            raise _Refused(host, bad[0])
    last: OSError = OSError(f"{host} has no address")
    for address in addresses:
        try:
            return connect(address, port, timeout)
        except OSError as e:
            last = e
    raise last


class Downloader:
    """One HTTP client (shared connections, at most ``max_connections``) for many downloads,
    from any number of threads. Close it when done (or use it as a context manager)."""

    def __init__(
        self, limits: Limits | None = None, *, allow_private: bool | None = None, max_connections: int = 16
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ClipseekError("downloading URLs needs httpx: pip install 'clipseek[urls]'") from None
        self.limits = limits or Limits()
        self.private_ok = private_urls_allowed(allow_private)
        self._stop = threading.Event()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._client = httpx.Client(
            transport=_transport(self.private_ok, max_connections, self._sockets),
            follow_redirects=False,  # followed in _attempt, each hop checked
            trust_env=False,  # no proxy or .netrc from the environment: nothing connects but the guard
            headers={"User-Agent": "clipseek", "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    def fetch(self, url: str) -> bytes:
        sink = BytesSink()
        self.download(url, sink)
        return sink.getvalue()

    def download(self, url: str, sink: Sink) -> int:
        """Stream ``url``'s body into ``sink`` (retrying as the limits say); return its size.

        Raises DownloadError naming the URL, the reason and, after retries, the attempts made."""
        import random  # here, as httpx: not on a text query's path

        lim = self.limits
        deadline = time.monotonic() + lim.deadline
        token = _DEADLINE.set(deadline)
        try:
            attempt = 1
            while True:
                try:
                    return self._attempt(url, sink)
                except _Retry as r:
                    wait = random.uniform(0, min(lim.max_backoff, lim.backoff * 2 ** (attempt - 1)))
                    if r.retry_after is not None:
                        wait = max(wait, r.retry_after)
                    if attempt > lim.retries or time.monotonic() + wait >= deadline or self._stop.is_set():
                        err = r.error
                        if attempt > 1:
                            err = DownloadError(f"{err} ({attempt} attempts)", err.reason)
                        raise err from None
                    self._stop.wait(wait)
                    attempt += 1
        finally:
            _DEADLINE.reset(token)

    def _attempt(self, url: str, sink: Sink) -> int:
        import httpx

        lim = self.limits
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(current)
            where = "" if current == url else f" (redirected to {current})"
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DownloadError(f"{url}: only http:// and https:// URLs are supported{where}", "bad_url")
            timeout = httpx.Timeout(lim.read_timeout, connect=lim.connect_timeout, pool=lim.deadline)
            try:
                with self._client.stream("GET", current, timeout=timeout) as resp:
                    location = resp.headers.get("Location")
                    if resp.status_code in _REDIRECTS and location:
                        current = urllib.parse.urljoin(current, location)
                        continue
                    return self._body(url, resp, sink)
            except _Refused as e:
                raise DownloadError(
                    f"{url}: refused: {e.args[0]} resolves to {e.args[1]}, a local or private address; "
                    f"pass allow_private_urls=True (CLI: --allow-private-urls, or {ALLOW_PRIVATE_ENV}=1) to allow it",
                    "refused_address",
                ) from None
            except httpx.TimeoutException as e:
                if _remaining() <= 0:
                    err = DownloadError(f"{url}: download took longer than {lim.deadline:g} s", "timeout")
                    raise _Retry(err) from None
                what = "connecting" if isinstance(e, httpx.ConnectTimeout) else "waiting for data"
                limit = lim.connect_timeout if isinstance(e, httpx.ConnectTimeout) else lim.read_timeout
                raise _Retry(DownloadError(f"{url}: timed out {what} ({limit:g} s){where}", "timeout")) from None
            except httpx.RemoteProtocolError as e:
                raise DownloadError(f"{url}: truncated: the connection ended early ({e}){where}", "truncated") from None
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
                raise DownloadError(f"{url}: cannot download ({e}){where}", "download_failed") from None
        raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects", "too_many_redirects")

    def _body(self, url: str, resp: httpx.Response, sink: Sink) -> int:
        import http.client

        status = resp.status_code
        if status != 200:
            err = DownloadError(f"{url}: HTTP {status} {http.client.responses.get(status, '')}".rstrip(), f"http_{status}")
            if status == 429 or status >= 500:
                raise _Retry(err, _retry_after(resp.headers.get("Retry-After")))
            raise err
        max_bytes = self.limits.max_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise DownloadError(f"{url}: larger than {max_bytes:,} bytes", "too_large")
        sink.reset()
        size = 0
        head = b""
        for chunk in resp.iter_raw():
            if self._stop.is_set():
                raise DownloadError(f"{url}: download cancelled", "download_failed")
            if size < _SNIFF:
                head += chunk[: _SNIFF - size]
                if len(head) >= _SNIFF:
                    self._check_image(url, head, resp)
            size += len(chunk)
            if size > max_bytes:
                raise DownloadError(f"{url}: larger than {max_bytes:,} bytes", "too_large")
            sink.write(chunk)
        if size < _SNIFF:
            self._check_image(url, head, resp)
        return size

    @staticmethod
    def _check_image(url: str, head: bytes, resp: httpx.Response) -> None:
        if not looks_like_image(head):
            kind = resp.headers.get("Content-Type", "no Content-Type")
            raise DownloadError(f"{url}: not an image ({kind})", "not_an_image")

    def cancel(self) -> None:
        """Stop every running download now: waits end, blocked reads are woken (their sockets
        shut down), and no download starts another attempt."""
        self._stop.set()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    import email.utils  # here: it costs a text query's start about 10 ms

    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def fetch_url(
    url: str,
    *,
    timeout: float = URL_TIMEOUT,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    allow_private: bool | None = None,
) -> bytes:
    """Download one image ``url`` within ``timeout`` seconds in all (a URL query).

    Raises DownloadError (a BadImage) naming the URL and the reason: a scheme other than http(s), an
    HTTP error, a refused (private) address, too many redirects, more than ``max_bytes``, bytes that
    are not an image, or the deadline passed."""
    limits = Limits(connect_timeout=timeout, read_timeout=timeout, deadline=timeout, max_bytes=max_bytes, retries=1)
    with Downloader(limits, allow_private=allow_private, max_connections=2) as d:
        return d.fetch(url)
