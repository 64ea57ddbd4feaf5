"""A small forward HTTP proxy for tests, on 127.0.0.1 (stop it with ``close()`` or ``with``).

It answers absolute-form requests (``GET http://host:port/path``) by fetching the target itself
and relaying the answer, and ``CONNECT host:port`` by opening a TCP tunnel; it records what it was
asked (``log``: the absolute URL, or ``CONNECT host:port``) and the ``Proxy-Authorization`` header
of each request (``auth``). ``hosts`` maps names to the address it connects to instead, so
"public" names of the tests' faked resolver reach the loopback test servers. With
``refuse_connect`` set it answers CONNECT with 403. With ``tls`` (an SSLContext) it is an
https:// proxy.
"""

from __future__ import annotations

import http.client
import http.server
import select
import socket
import ssl
import threading
import urllib.parse


class ForwardProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hosts: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.hosts = dict(hosts or {})
        self.log: list[str] = []
        self.auth: list[str | None] = []
        self.refuse_connect = False
        self.lock = threading.Lock()
        self.scheme = "https" if tls is not None else "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def target(self, host: str) -> str:
        return self.hosts.get(host, host)

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up early is normal here
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: ForwardProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: object) -> None:
        pass

    def _record(self, what: str) -> None:
        with self.server.lock:
            self.server.log.append(what)
            self.server.auth.append(self.headers.get("Proxy-Authorization"))

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._record(self.path)
        parts = urllib.parse.urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(400, b"not an absolute-form http request")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        upstream = http.client.HTTPConnection(self.server.target(parts.hostname), parts.port or 80, timeout=10)
        try:
            upstream.request("GET", path, headers={"Host": parts.netloc, "Accept": self.headers.get("Accept", "*/*")})
            resp = upstream.getresponse()
            body = resp.read()
        except OSError as e:
            self._answer(502, f"cannot reach {parts.netloc}: {e}".encode())
            return
        finally:
            upstream.close()
        self.send_response(resp.status, resp.reason)
        for name in ("Content-Type", "Location", "Retry-After"):
            if resp.getheader(name) is not None:
                self.send_header(name, resp.getheader(name) or "")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:  # noqa: N802
        self._record(f"CONNECT {self.path}")
        host, _, port = self.path.rpartition(":")
        if self.server.refuse_connect:
            self._answer(403, b"tunnels are not allowed here")
            return
        try:
            upstream = socket.create_connection((self.server.target(host.strip("[]")), int(port)), timeout=10)
        except OSError as e:
            self._answer(502, f"cannot reach {self.path}: {e}".encode())
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        client = self.connection
        try:
            _pipe(client, upstream)
        finally:
            upstream.close()
        self.close_connection = True

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Relay bytes both ways until either side closes."""
    socks = [a, b]
    while True:
        ready, _, _ = select.select(socks, [], [], 10)
        if not ready:
            return
        for s in ready:
            other = b if s is a else a
            try:
                # an SSL socket (an https:// proxy) may hold decrypted bytes select cannot see: read all
                data = s.recv(65536)
                while isinstance(s, ssl.SSLSocket) and s.pending():
                    data += s.recv(s.pending())
            except OSError:
                return
            if not data:
                return
            try:
                other.sendall(data)
            except OSError:
                return
