"""URL items at ingest: retries, timeouts, limits, refused addresses, the content cache, re-runs.

Every server here is a real threaded HTTP server on 127.0.0.1, stopped at the end of its test;
"public" hosts exist only in a faked resolver whose connections also go to 127.0.0.1. Timeouts
are about 0.5 s so the file stays fast.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from _httpd import serving
from click.testing import CliRunner
from PIL import Image

import clipseek
from clipseek import net
from clipseek.downloads import DownloadCache, DownloadStage
from clipseek.errors import DownloadError

PUBLIC_IP = "93.184.216.34"  # never contacted: the faked connect goes to 127.0.0.1
FAST = net.Limits(connect_timeout=0.5, read_timeout=0.5, deadline=5.0, retries=2, backoff=0.01)


def png(color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


RED, BLUE, GREEN = png((220, 30, 30)), png((30, 40, 220)), png((30, 200, 40))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with self.server.lock:
            self.server.hits[self.path] += 1
            n = self.server.hits[self.path]
        p = self.path
        if p.startswith("/img/"):  # /img/<colour>/<anything>: that colour
            self._send({"red": RED, "blue": BLUE, "green": GREEN}[p.split("/")[2]])
        elif p == "/flaky":  # 500 once, then the image
            self._send(RED) if n > 1 else self.send_error(500)
        elif p == "/busy":  # 429 with Retry-After once, then the image
            if n > 1:
                self._send(BLUE)
            else:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
        elif p == "/always-500":
            self.send_error(500)
        elif p == "/slow":  # headers only after 2 s: a read timeout
            time.sleep(2)
            self._send(RED)
        elif p == "/silent":  # headers only after 5 s
            time.sleep(5)
            self._send(RED)
        elif p == "/huge":  # declared size over the limit
            self._send(RED + b"\0" * 300_000)
        elif p == "/huge-undeclared":  # no Content-Length: the limit must hold while streaming
            self.send_response(200)
            self.end_headers()
            try:
                self.wfile.write(RED)
                for _ in range(100):
                    self.wfile.write(b"\0" * 10_000)
            except OSError:
                pass  # the client hung up at its limit
        elif p.startswith("/loop/"):
            self._redirect(f"/loop/{int(p.removeprefix('/loop/')) + 1}")
        elif p.startswith("/redirect-to/"):
            self._redirect(p.removeprefix("/redirect-to/"))
        elif p == "/page.html":
            body = b"<!doctype html><html><body>moved</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif p == "/truncated":  # promises 5000 bytes, sends fewer, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(RED)
            self.wfile.flush()
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as srv:
        yield srv


@pytest.fixture
def public(server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Base URL of 'images.example', a public host whose connections reach the test server."""
    port = server.server_address[1]
    real_resolve = net.resolve

    def resolve(host: str, p: int) -> list[str]:
        return [PUBLIC_IP] if host == "images.example" else real_resolve(host, p)

    def connect(address: str, p: int, timeout: float) -> socket.socket:
        assert address in (PUBLIC_IP, "127.0.0.1"), address  # nothing else is ever contacted
        return socket.create_connection(("127.0.0.1", port), timeout)

    monkeypatch.setattr(net, "resolve", resolve)
    monkeypatch.setattr(net, "connect", connect)
    monkeypatch.delenv(net.ALLOW_PRIVATE_ENV, raising=False)
    return f"http://images.example:{port}"


def _fail(url: str, limits: net.Limits = FAST, allow_private: bool | None = True) -> DownloadError:
    with net.Downloader(limits, allow_private=allow_private) as d, pytest.raises(DownloadError) as info:
        d.fetch(url)
    return info.value


def test_download_and_retry(server: Server) -> None:
    with net.Downloader(FAST, allow_private=True) as d:
        assert d.fetch(f"{server.base}/img/red/a.png") == RED
        assert d.fetch(f"{server.base}/flaky") == RED  # 500, then 200
        t0 = time.monotonic()
        assert d.fetch(f"{server.base}/busy") == BLUE  # 429, waits Retry-After: 1, then 200
        assert time.monotonic() - t0 >= 1.0
    assert (server.hits["/flaky"], server.hits["/busy"]) == (2, 2)
    e = _fail(f"{server.base}/always-500")
    assert (str(e), e.reason) == (f"{server.base}/always-500: HTTP 500 Internal Server Error (3 attempts)", "http_500")
    assert server.hits["/always-500"] == 3  # retries=2
    e = _fail(f"{server.base}/missing")
    assert (str(e), e.reason) == (f"{server.base}/missing: HTTP 404 Not Found", "http_404")
    assert server.hits["/missing"] == 1  # a 404 is not retried


def test_dead_links_have_reasons(server: Server) -> None:
    b = server.base
    one_try = net.Limits(connect_timeout=0.5, read_timeout=0.5, deadline=5.0, retries=1, backoff=0.01)
    t0 = time.monotonic()
    e = _fail(f"{b}/slow", one_try)
    assert (str(e), e.reason) == (f"{b}/slow: timed out waiting for data (0.5 s) (2 attempts)", "timeout")
    assert time.monotonic() - t0 < 1.8 and server.hits["/slow"] == 2
    small = net.Limits(max_bytes=100_000, retries=0)
    e = _fail(f"{b}/huge", small)
    assert (str(e), e.reason) == (f"{b}/huge: larger than 100,000 bytes", "too_large")
    e = _fail(f"{b}/huge-undeclared", small)
    assert (str(e), e.reason) == (f"{b}/huge-undeclared: larger than 100,000 bytes", "too_large")
    e = _fail(f"{b}/loop/0")
    assert (str(e), e.reason) == (f"{b}/loop/0: more than 5 redirects", "too_many_redirects")
    assert server.hits["/loop/5"] == 1 and server.hits["/loop/6"] == 0  # 1 request + 5 redirects followed
    e = _fail(f"{b}/page.html")
    assert (str(e), e.reason) == (f"{b}/page.html: not an image (text/html)", "not_an_image")
    e = _fail(f"{b}/truncated")
    assert e.reason == "truncated" and str(e).startswith(f"{b}/truncated: truncated: the connection ended early")
    e = _fail("ftp://example.com/x.png")
    assert (str(e), e.reason) == ("ftp://example.com/x.png: only http:// and https:// URLs are supported", "bad_url")


def test_private_addresses_are_refused_also_after_a_redirect(server: Server, public: str) -> None:
    with net.Downloader(FAST) as d:
        assert d.fetch(f"{public}/img/green/x.png") == GREEN
    e = _fail(f"{server.base}/img/red/x.png", allow_private=None)
    assert e.reason == "refused_address"
    assert str(e).startswith(f"{server.base}/img/red/x.png: refused: 127.0.0.1 resolves to 127.0.0.1, a local or private")
    url = f"{public}/redirect-to/{server.base}/img/red/x.png"
    e = _fail(url, allow_private=None)
    assert e.reason == "refused_address" and str(e).startswith(f"{url}: refused: 127.0.0.1 resolves to 127.0.0.1")
    e = _fail(f"{public}/redirect-to/http://169.254.169.254/latest/meta-data/", allow_private=None)
    assert e.reason == "refused_address" and "refused: 169.254.169.254 resolves to 169.254.169.254" in str(e)
    assert server.hits["/img/red/x.png"] == 0  # the refused address was never contacted


def test_cache_is_content_addressed_and_atomic(server: Server, tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "dl")
    with net.Downloader(FAST, allow_private=True) as d:
        path, fresh = cache.fetch(f"{server.base}/img/red/1.png", d)
        assert fresh and path == tmp_path / "dl" / "objects" / hashlib.sha256(RED).hexdigest()[:2] / hashlib.sha256(RED).hexdigest()
        assert path.read_bytes() == RED
        assert cache.fetch(f"{server.base}/img/red/1.png", d) == (path, False)  # no second download
        assert cache.fetch(f"{server.base}/img/red/2.png", d) == (path, True)  # another URL, the same bytes
        with pytest.raises(DownloadError):
            cache.fetch(f"{server.base}/truncated", d)
    assert server.hits["/img/red/1.png"] == 1
    assert list((tmp_path / "dl" / "tmp").iterdir()) == []  # nothing partial left behind
    assert sum(1 for p in (tmp_path / "dl" / "objects").rglob("*") if p.is_file()) == 1


def _refs(server: Server, paths: list[str]) -> list[clipseek.ImageRef]:
    return [clipseek.ImageRef(id=f"{server.base}{p}", url=f"{server.base}{p}") for p in paths]


GOOD = ["/img/red/1.png", "/img/blue/2.png", "/img/green/3.png", "/flaky"]
BAD = {"/missing": ("HTTP 404 Not Found", "http_404"), "/page.html": ("not an image (text/html)", "not_an_image")}


def test_index_urls_then_rerun_downloads_nothing(engine, server: Server) -> None:  # type: ignore[no-untyped-def]
    c = engine.create("web", model="test-colors", store="local")
    rep = c.index(_refs(server, GOOD + list(BAD)), allow_private_urls=True)
    assert rep.added == 4
    assert sorted(rep.failed) == sorted(
        (f"{server.base}{p}", why, key, f"{server.base}{p}") for p, (why, key) in BAD.items()
    )
    top = c.search("blue", top=1).hits[0]
    assert top.id == f"{server.base}/img/blue/2.png"
    meta = c.get(top.id)["metadata"]
    assert meta["url"] == top.id and meta["file_size"] == len(BLUE)
    assert Path(meta["path"]).read_bytes() == BLUE  # kept for the grid
    assert Path(meta["path"]).is_relative_to(c.path / "downloads")
    hits = sum(server.hits.values())
    rep = c.index(_refs(server, GOOD), allow_private_urls=True)
    assert (rep.unchanged, rep.embedded, sum(server.hits.values())) == (4, 0, hits)
    # records lost (a crash before their commit): re-encoded from the cache, still no download
    c.delete([f"{server.base}/img/red/1.png", f"{server.base}/flaky"])
    rep = c.index(_refs(server, GOOD + ["/img/green/4.png"]), allow_private_urls=True)
    assert (rep.added, rep.unchanged) == (3, 2)
    assert sum(server.hits.values()) == hits + 1 and server.hits["/img/green/4.png"] == 1


def test_index_without_keeping_downloads(engine, server: Server) -> None:  # type: ignore[no-untyped-def]
    c = engine.create("web", model="test-colors", store="local")
    rep = c.index(_refs(server, GOOD + ["/page.html"]), allow_private_urls=True, keep_downloads=False)
    assert (rep.added, len(rep.failed)) == (4, 1)
    assert "path" not in c.get(f"{server.base}/img/red/1.png")["metadata"]
    assert [p for p in (c.path / "downloads").rglob("*") if p.is_file()] == []
    rep = c.index(_refs(server, GOOD), allow_private_urls=True, keep_downloads=False)
    assert rep.unchanged == 4 and server.hits["/img/red/1.png"] == 1  # skipped by its URL fingerprint


def test_index_refuses_local_urls_unless_allowed(engine, server: Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(net.ALLOW_PRIVATE_ENV, raising=False)
    c = engine.create("web", model="test-colors", store="memory")
    rep = c.index(_refs(server, ["/img/red/1.png"]))
    assert rep.added == 0 and rep.failed[0][1].startswith("refused: 127.0.0.1 resolves to 127.0.0.1")
    assert sum(server.hits.values()) == 0
    monkeypatch.setenv(net.ALLOW_PRIVATE_ENV, "1")  # the configuration's setting
    assert c.index(_refs(server, ["/img/red/1.png"])).added == 1


def test_download_stage_bounds_concurrency(server: Server, tmp_path: Path) -> None:
    """At most `concurrency` downloads run at once, and results come out as they finish."""
    running, peak = 0, 0
    lock = threading.Lock()
    stage = DownloadStage(tmp_path / "dl", limits=FAST, concurrency=3, allow_private=True)
    real_fetch = stage.cache.fetch

    def fetch(url: str, d: net.Downloader) -> tuple[Path, bool]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)
            return real_fetch(url, d)
        finally:
            with lock:
                running -= 1

    stage.cache.fetch = fetch  # type: ignore[method-assign]
    refs = _refs(server, [f"/img/red/{i}.png" for i in range(12)]) + [clipseek.ImageRef(id="local", data=RED)]
    out = list(stage.run(refs))
    assert peak == 3 and stage.downloaded == 12
    assert sorted(r.id for r, e in out if e is None) == sorted(r.id for r in refs)
    assert all(r.url is None and r.path is not None for r, _ in out if r.id != "local")


def test_cli_passes_download_options(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from clipseek.cli import cli
    from clipseek.engine import Collection

    seen: dict[str, object] = {}

    def index(self, target, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        return clipseek.ingest.IngestReport()

    monkeypatch.setattr(Collection, "index", index)
    (tmp_path / "x").mkdir()
    args = ["--data-dir", str(tmp_path / "d"), "index", str(tmp_path / "x"), "-c", "w", "--model", "test-colors", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (seen["allow_private_urls"], seen["keep_downloads"], seen["download_concurrency"], seen["max_download_mb"]) == (
        None, True, 16, 50.0
    )
    more = ["--allow-private-urls", "--no-keep-downloads", "--download-concurrency", "4", "--max-download-mb", "2.5"]
    res = CliRunner().invoke(cli, args + more)
    assert res.exit_code == 0, res.output
    assert (seen["allow_private_urls"], seen["keep_downloads"], seen["download_concurrency"], seen["max_download_mb"]) == (
        True, False, 4, 2.5
    )


def test_stopping_the_stage_cancels_downloads_in_flight(server: Server, tmp_path: Path) -> None:
    """Ctrl-C or an encoder error closes the stage: a download blocked on a silent server (5 s here,
    30 s read timeout) is woken at once, not waited for."""
    patient = net.Limits(read_timeout=30.0, deadline=60.0)
    stage = DownloadStage(tmp_path / "dl", limits=patient, concurrency=2, allow_private=True)
    out = stage.run(_refs(server, ["/img/red/1.png", "/silent"]))
    ref, error = next(out)
    assert (ref.id, error) == (f"{server.base}/img/red/1.png", None)
    wait_until = time.monotonic() + 10.0  # a loaded machine can take a while to send the request
    while server.hits.get("/silent", 0) == 0 and time.monotonic() < wait_until:
        time.sleep(0.02)
    assert server.hits["/silent"] == 1  # /silent is now waiting for its headers
    t0 = time.monotonic()
    out.close()
    assert time.monotonic() - t0 < 2.0 and server.hits["/silent"] == 1
