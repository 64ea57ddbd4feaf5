"""URL downloads: an overall deadline, a size cap, and no requests to local or private addresses.

Every server here listens on 127.0.0.1 and stops at the end of its test; "public" hosts exist
only in a faked resolver whose connections also go to 127.0.0.1.
"""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from typing import Iterator

import pytest
from _httpd import serving

from clipseek import net
from clipseek.errors import BadImage, DownloadError

PUBLIC_IP = "93.184.216.34"  # never contacted: the faked connect below goes to 127.0.0.1


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/ok.png":
            self._send(PNG)
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG) + 100))
            self.end_headers()
            try:
                self.wfile.write(PNG)
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the client hung up at its deadline: that is the point
        elif self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to/"))
            self.end_headers()
        elif self.path.startswith("/loop/"):
            n = int(self.path.removeprefix("/loop/"))
            self.send_response(302)
            self.send_header("Location", f"/loop/{n + 1}")
            self.end_headers()
        elif self.path == "/big":
            self._send(PNG + b"y" * 5000)
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    with serving(srv):
        yield f"127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def public_host(server, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """'images.example' resolves to a public address; connecting to it reaches the test server."""
    port = int(server.split(":")[1])
    real_resolve = net.resolve

    def resolve(host: str, p: int) -> list[str]:
        return [PUBLIC_IP] if host == "images.example" else real_resolve(host, p)

    def connect(address: str, p: int, timeout: float) -> socket.socket:
        assert address in (PUBLIC_IP, "127.0.0.1"), address  # nothing else is ever contacted
        return socket.create_connection(("127.0.0.1", port), timeout)

    monkeypatch.setattr(net, "resolve", resolve)
    monkeypatch.setattr(net, "connect", connect)
    return f"images.example:{port}"


def test_download_within_limits(server) -> None:  # type: ignore[no-untyped-def]
    assert net.fetch_url(f"http://{server}/ok.png", allow_private=True) == PNG
    with pytest.raises(DownloadError, match=rf"^http://{server}/missing: HTTP 404 Not Found$") as e:
        net.fetch_url(f"http://{server}/missing", allow_private=True)
    assert e.value.reason == "http_404"
    with pytest.raises(BadImage, match=rf"^http://{server}/big: larger than 1,000 bytes$"):
        net.fetch_url(f"http://{server}/big", allow_private=True, max_bytes=1000)
    with pytest.raises(BadImage, match=r"^ftp://x/y.png: only http:// and https:// URLs are supported$"):
        net.fetch_url("ftp://x/y.png")


def test_a_dripping_server_hits_the_overall_deadline(server) -> None:  # type: ignore[no-untyped-def]
    """One byte every 0.1 s never trips a per-read timeout; the overall deadline stops it."""
    t0 = time.monotonic()
    with pytest.raises(BadImage, match=rf"^http://{server}/drip: download took longer than 1 s$"):
        net.fetch_url(f"http://{server}/drip", timeout=1.0, allow_private=True)
    assert time.monotonic() - t0 < 2.0


def test_local_addresses_are_refused_unless_allowed(server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(net.ALLOW_PRIVATE_ENV, raising=False)
    with pytest.raises(
        BadImage,
        match=rf"^http://{server}/ok.png: refused: 127\.0\.0\.1 resolves to 127\.0\.0\.1, a local or private address; "
        r"pass allow_private_urls=True \(CLI: --allow-private-urls, or CLIPSEEK_ALLOW_PRIVATE_URLS=1\) to allow it$",
    ):
        net.fetch_url(f"http://{server}/ok.png")
    monkeypatch.setenv(net.ALLOW_PRIVATE_ENV, "1")
    assert net.fetch_url(f"http://{server}/ok.png") == PNG
    with pytest.raises(BadImage, match="refused"):
        net.fetch_url(f"http://{server}/ok.png", allow_private=False)  # the argument wins over the env


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "224.0.0.1", "0.0.0.0",
                "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1"]
)
def test_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not net.is_public(address)


def test_public_addresses_are_public() -> None:
    assert net.is_public(PUBLIC_IP) and net.is_public("2606:4700::1111")


def test_redirects_are_checked_and_bounded(public_host, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(net.ALLOW_PRIVATE_ENV, raising=False)
    assert net.fetch_url(f"http://{public_host}/ok.png") == PNG
    assert net.fetch_url(f"http://{public_host}/redirect-to//ok.png") == PNG
    # the cloud metadata address, reached by a redirect from an allowed host: refused before connecting
    url = f"http://{public_host}/redirect-to/http://169.254.169.254/latest/meta-data/"
    with pytest.raises(BadImage, match=r"refused: 169\.254\.169\.254 resolves to 169\.254\.169\.254"):
        net.fetch_url(url)
    with pytest.raises(BadImage, match=r"refused: localhost resolves to (127\.0\.0\.1|::1)"):
        net.fetch_url(f"http://{public_host}/redirect-to/http://localhost:1/x")
    with pytest.raises(BadImage, match=rf"^http://{public_host}/loop/0: more than 5 redirects$"):
        net.fetch_url(f"http://{public_host}/loop/0")
    with pytest.raises(BadImage, match=r"only http:// and https:// URLs are supported \(redirected to file:///etc/passwd\)"):
        net.fetch_url(f"http://{public_host}/redirect-to/file:///etc/passwd")


def test_https_keeps_the_overall_deadline(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """After the TLS handshake the stream must still be the guarded one: a dripping HTTPS server
    is stopped at the deadline too (a self-signed certificate, trusted only here)."""
    import shutil
    import ssl
    import subprocess

    import httpx

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: ssl.create_default_context(cafile=str(cert)))
    base = f"https://127.0.0.1:{srv.server_address[1]}"
    try:
        assert net.fetch_url(f"{base}/ok.png", allow_private=True) == PNG
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=rf"^{base}/drip: download took longer than 1 s$"):
            net.fetch_url(f"{base}/drip", timeout=1.0, allow_private=True)
        assert time.monotonic() - t0 < 2.0
    finally:
        srv.shutdown()
        srv.server_close()
