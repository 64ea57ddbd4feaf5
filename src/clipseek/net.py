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
  ``allow_private=True`` or ``CLIPSEEK_ALLOW_PRIVATE_URLS=1`` lifts it;
- an HTTP(S) proxy when one is configured (:func:`proxies_from`: ``proxy=``, else
  ``CLIPSEEK_PROXY``, else ``http_proxy``/``https_proxy``/``all_proxy`` and ``no_proxy``, as curl
  reads them; ``proxy=""`` means none). The proxy's own address is allowed whatever it is (the user
  named it); the target, which the proxy resolves and connects to, is checked here before each
  request (each redirect hop): an IP literal or a name that resolves here to a refused address is
  never sent to the proxy. http:// targets go as absolute-form requests, https:// ones through a
  CONNECT tunnel; the limits above hold either way.

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
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from .errors import ClipseekError, DownloadError

if TYPE_CHECKING:
    import httpx

URL_TIMEOUT = 20.0
MAX_DOWNLOAD_BYTES = 50_000_000
MAX_REDIRECTS = 5
ALLOW_PRIVATE_ENV = "CLIPSEEK_ALLOW_PRIVATE_URLS"
PROXY_ENV = "CLIPSEEK_PROXY"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
UNRESOLVED_TTL = 60.0  # seconds a name this machine could not resolve is left to the proxy unasked
# host -> until when (monotonic) it is taken as unresolvable here: a machine whose resolver times out
# on outside names would otherwise pay that timeout on every proxied download.
_UNRESOLVED: dict[str, float] = {}
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
    "proxy_failed": "the proxy could not be reached, or refused the tunnel (CONNECT answered other than 2xx)",
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
    """A host resolved to an address we may not contact (raised inside the connection):
    ``(host, address, proxy)``, the proxy (or None) the request would have gone through."""

    def __init__(self, host: str, address: str, proxy: Proxy | None = None) -> None:
        super().__init__(host, address, proxy)
        self.host, self.address, self.proxy = host, address, proxy


class _ViaProxy:
    """Marks the transport errors of connecting to a proxy (their message names it)."""


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


@dataclass(frozen=True)
class Proxy:
    """One HTTP(S) proxy: where it is, its credentials, and which setting named it."""

    scheme: str  # "http" (plain to the proxy) or "https" (TLS to the proxy)
    host: str
    port: int
    source: str  # the setting it came from, for messages: "proxy", "CLIPSEEK_PROXY", "https_proxy" ...
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (safe to print)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url if self.source == "proxy" else f"{self.url} (from {self.source})"


@dataclass(frozen=True)
class Proxies:
    """Which proxy, if any, each URL goes through (see :func:`proxies_from`)."""

    http: Proxy | None = None  # for http:// targets
    https: Proxy | None = None  # for https:// targets
    no_proxy: tuple[str, ...] = ()  # hosts reached directly (curl's NO_PROXY rules)

    def for_url(self, scheme: str, host: str) -> Proxy | None:
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None or bypasses_proxy(host, self.no_proxy):
            return None
        return proxy


def parse_proxy(value: str, source: str = "proxy") -> Proxy:
    """``http://[user:password@]host[:port]`` (or ``https://``; no scheme means ``http://``, as in curl)
    as a :class:`Proxy`. Raises ClipseekError naming ``source`` (the setting) on anything else."""
    text = value.strip()
    raw = text if "://" in text else f"http://{text}"
    shown = _redact(text)

    def bad(why: str) -> ClipseekError:
        return ClipseekError(f"{source}={shown!r}: {why}; expected http://host:port or https://host:port")

    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port
    except ValueError as e:
        raise bad(f"not a proxy URL ({e})") from None
    if port == 0:  # else "or 80" below would quietly send everything to port 80
        raise bad("not a proxy URL (port 0)")
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise bad("SOCKS proxies are not supported, only HTTP(S) proxies")
    if scheme not in ("http", "https"):
        raise bad(f"a proxy URL starts with http:// or https://, not {scheme}://")
    if not parts.hostname or any(c.isspace() for c in text):
        raise bad("no proxy host" if not parts.hostname else "spaces in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("a proxy URL has no path (PAC files are not supported)")
    try:
        host = parts.hostname.encode("idna").decode("ascii")  # what DNS and the Host header see
    except UnicodeError:
        raise bad("not a valid host name") from None
    return Proxy(
        scheme,
        host,
        port or (443 if scheme == "https" else 80),
        source,
        urllib.parse.unquote(parts.username) if parts.username else None,
        urllib.parse.unquote(parts.password or "") if parts.username else None,
    )


def _redact(text: str) -> str:
    """A proxy URL with its password, if any, replaced by ``***``."""
    head, sep, rest = text.partition("://")
    if not sep:
        head, rest = "", text
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


def proxies_from(proxy: str | None = None, env: Mapping[str, str] | None = None) -> Proxies:
    """The proxies downloads use.

    ``proxy`` (a URL) is used for http:// and https:// targets; ``""`` means no proxy, whatever the
    environment says; None means: ``CLIPSEEK_PROXY`` when it is set (the same rules), else the
    standard variables as curl reads them: ``http_proxy`` for http:// targets, ``https_proxy`` for
    https:// ones, ``all_proxy`` for both (lower case first, then upper case; an empty one counts
    as unset; ``HTTP_PROXY`` is ignored under CGI, where a request's ``Proxy:`` header sets it).
    ``no_proxy``/``NO_PROXY`` (see :func:`bypasses_proxy`) applies to any proxy but ``""``."""
    env = os.environ if env is None else env
    if proxy is None and PROXY_ENV in env:
        proxy, source = env[PROXY_ENV], PROXY_ENV
    else:
        source = "proxy"

    def var(name: str) -> tuple[str, str] | None:
        for key in (name, name.upper()):
            if key == "HTTP_PROXY" and "REQUEST_METHOD" in env:
                continue
            value = env.get(key, "").strip()
            if value:
                return key, value
        return None

    no_proxy = tuple(e for e in (var("no_proxy") or ("", ""))[1].replace(",", " ").split() if e)
    if proxy is not None:
        if not proxy.strip():
            return Proxies()
        one = parse_proxy(proxy, source)
        return Proxies(one, one, no_proxy)
    found = {}
    for scheme in ("http", "https"):
        named = var(f"{scheme}_proxy") or var("all_proxy")
        found[scheme] = parse_proxy(named[1], named[0]) if named else None
    if found["http"] is None and found["https"] is None:
        return Proxies()
    return Proxies(found["http"], found["https"], no_proxy)


def _ascii_host(name: str) -> str:
    """A host name as the URL's host reaches the proxy choice: IDNA (``bücher.example`` ->
    ``xn--bcher-kva.example``), as :func:`parse_proxy` writes the proxy's own host. Left as it is
    when it is ASCII already or IDNA cannot encode it (it then matches nothing)."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def bypasses_proxy(host: str, no_proxy: tuple[str, ...]) -> bool:
    """Whether ``host`` is reached directly under these ``NO_PROXY`` entries (curl's rules): ``*``
    (every host), a name (itself and its subdomains; a leading dot changes nothing), an IP address,
    or a CIDR range (``10.0.0.0/8``, ``fd00::/8``). Case and a trailing dot do not matter; ports are
    not part of an entry."""
    name = host.strip("[]").rstrip(".").lower()
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    for entry in no_proxy:
        e = _ascii_host(entry.strip("[]").strip(".").lower())
        if e == "*":
            return True
        if not e:
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                pass  # a name: it does not match an IP address
        elif name == e or name.endswith("." + e):
            return True
    return False


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


def _transport(
    private_ok: bool, max_connections: int, sockets: weakref.WeakSet[socket.socket], proxies: Proxies
) -> httpx.BaseTransport:
    """An httpx transport whose every TCP connection goes through :func:`_guarded_connect` (and
    is added to ``sockets``, so a cancel can wake reads blocked on them). With proxies, a request
    for a proxied URL goes to a pool that connects only to its proxy (whatever its address: the
    user configured it) once :func:`_check_target` has passed the URL's host."""
    import httpcore
    import httpx

    class GuardedStream(httpcore.NetworkStream):
        """Reads and writes never wait past the running download's deadline (a TLS stream too,
        TLS inside a TLS tunnel included: each layer wraps the one below)."""

        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            tls = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
            sock = tls.get_extra_info("socket")
            if sock is not None:
                sockets.add(sock)
            return GuardedStream(tls)

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class ProxyConnectError(_ViaProxy, httpcore.ConnectError):
        pass

    class ProxyConnectTimeout(_ViaProxy, httpcore.ConnectTimeout):
        pass

    class GuardedBackend(httpcore.SyncBackend):
        """Connects through the address guard; ``proxy``: this backend reaches only that proxy."""

        def __init__(self, proxy: Proxy | None = None) -> None:
            self.proxy = proxy

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            from httpcore._backends.sync import SyncStream

            limit = _clamp(timeout, httpcore.ConnectTimeout)
            proxy = self.proxy
            if proxy is not None and (host, port) != (proxy.host, proxy.port):
                raise _Refused(host, host, proxy)  # a proxy pool connects to its proxy, nowhere else
            try:
                sock = _guarded_connect(host, port, limit, private_ok or proxy is not None)
            except TimeoutError as e:
                if proxy is not None:
                    raise ProxyConnectTimeout(f"connecting to the proxy {proxy}: {e}") from None
                raise httpcore.ConnectTimeout(str(e)) from None
            except OSError as e:
                if proxy is not None:
                    raise ProxyConnectError(f"cannot connect to the proxy {proxy}: {e}") from None
                raise httpcore.ConnectError(str(e)) from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sockets.add(sock)
            return GuardedStream(SyncStream(sock))

    def pool(proxy: Proxy | None) -> httpx.HTTPTransport:
        transport = httpx.HTTPTransport(trust_env=False)  # no proxy from httpx: it would connect unguarded
        # httpx takes no network backend; its pool does (httpcore's public ConnectionPool / HTTPProxy).
        common: dict[str, Any] = {
            "ssl_context": httpx.create_ssl_context(),
            "max_connections": max_connections,
            "max_keepalive_connections": max_connections,
            "network_backend": GuardedBackend(proxy),
        }
        if proxy is None:
            transport._pool = httpcore.ConnectionPool(**common)
        else:
            auth = (proxy.username, proxy.password or "") if proxy.username is not None else None
            transport._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(scheme=proxy.scheme, host=proxy.host, port=proxy.port, target="/"),
                proxy_auth=auth,
                proxy_ssl_context=httpx.create_ssl_context() if proxy.scheme == "https" else None,
                **common,
            )
        return transport

    direct = pool(None)
    if proxies.http is None and proxies.https is None:
        return direct
    via = {p: pool(p) for p in {proxies.http, proxies.https} if p is not None}

    class Router(httpx.BaseTransport):
        """Direct requests to the guarded pool, proxied ones (target checked) to their proxy's pool."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            url = request.url
            host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and the proxy see it
            proxy = proxies.for_url(url.scheme, host)
            if proxy is None:
                return direct.handle_request(request)
            if not private_ok and _UNRESOLVED.get(host, 0.0) < time.monotonic():
                if not _check_target(host, url.port or (443 if url.scheme == "https" else 80), proxy):
                    _UNRESOLVED[host] = time.monotonic() + UNRESOLVED_TTL
            return via[proxy].handle_request(request)

        def close(self) -> None:
            for t in (direct, *via.values()):
                t.close()

    return Router()


def _check_target(host: str, port: int, proxy: Proxy) -> bool:
    """Refuse (before the proxy is asked) a target host that is, or resolves here to, an address
    that is not public. A name this machine cannot resolve is left to the proxy (split DNS): then
    False (the caller remembers it for ``UNRESOLVED_TTL``)."""
    try:
        is_public(host)
        addresses = [host]  # an IP literal
    except ValueError:
        try:
            addresses = resolve(host, port)
        except OSError:
            return False
    bad = [a for a in addresses if not is_public(a)]
    if bad:
        raise _Refused(host, bad[0], proxy)
    return True


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
    from any number of threads. Close it when done (or use it as a context manager).

    ``proxy``: see :func:`proxies_from` (None: the environment; ``""``: no proxy). A malformed
    proxy setting raises ClipseekError naming it here, before anything is downloaded."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_private: bool | None = None,
        max_connections: int = 16,
        proxy: str | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ClipseekError("downloading URLs needs httpx: pip install 'clipseek[urls]'") from None
        self.limits = limits or Limits()
        self.private_ok = private_urls_allowed(allow_private)
        self.proxies = proxies_from(proxy)
        self._stop = threading.Event()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._client = httpx.Client(
            transport=_transport(self.private_ok, max_connections, self._sockets, self.proxies),
            follow_redirects=False,  # followed in _attempt, each hop checked
            trust_env=False,  # no .netrc; proxies are the transport's (proxies_from), never httpx's own
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
                via = f" (not sent to the proxy {e.proxy})" if e.proxy is not None else ""
                raise DownloadError(
                    f"{url}: refused: {e.host} resolves to {e.address}, a local or private address{via}; "
                    f"pass allow_private_urls=True (CLI: --allow-private-urls, or {ALLOW_PRIVATE_ENV}=1) to allow it",
                    "refused_address",
                ) from None
            except httpx.TimeoutException as e:
                if _remaining() <= 0:
                    err = DownloadError(f"{url}: download took longer than {lim.deadline:g} s", "timeout")
                    raise _Retry(err) from None
                what = "connecting" if isinstance(e, httpx.ConnectTimeout) else "waiting for data"
                if isinstance(e.__cause__, _ViaProxy):
                    what = f"connecting to the proxy {self._proxy(parts.scheme)}"
                limit = lim.connect_timeout if isinstance(e, httpx.ConnectTimeout) else lim.read_timeout
                raise _Retry(DownloadError(f"{url}: timed out {what} ({limit:g} s){where}", "timeout")) from None
            except httpx.RemoteProtocolError as e:
                raise DownloadError(f"{url}: truncated: the connection ended early ({e}){where}", "truncated") from None
            except httpx.ProxyError as e:  # the proxy answered a CONNECT with other than 2xx
                raise DownloadError(
                    f"{url}: the proxy {self._proxy(parts.scheme)} refused the tunnel: {e}{where}", "proxy_failed"
                ) from None
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
                if isinstance(e.__cause__, _ViaProxy):
                    raise DownloadError(f"{url}: {e}{where}", "proxy_failed") from None
                raise DownloadError(f"{url}: cannot download ({e}){where}", "download_failed") from None
        raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects", "too_many_redirects")

    def _proxy(self, scheme: str) -> Proxy | None:
        return self.proxies.https if scheme == "https" else self.proxies.http

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
    proxy: str | None = None,
) -> bytes:
    """Download one image ``url`` within ``timeout`` seconds in all (a URL query), through
    ``proxy`` (see :func:`proxies_from`; None: the environment's).

    Raises DownloadError (a BadImage) naming the URL and the reason: a scheme other than http(s), an
    HTTP error, a refused (private) address, too many redirects, more than ``max_bytes``, bytes that
    are not an image, a proxy that failed, or the deadline passed."""
    limits = Limits(connect_timeout=timeout, read_timeout=timeout, deadline=timeout, max_bytes=max_bytes, retries=1)
    with Downloader(limits, allow_private=allow_private, max_connections=2, proxy=proxy) as d:
        return d.fetch(url)
