"""`clipseek model pull` (and the default-model download of a new collection) against hubs that fail in
different ways: one that answers the first request and then stalls, one that never ends, a host name that
does not resolve, a port that refuses. Each ends within its bound with a message saying what happened.
'The hub' is a real HTTP server on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipseek import modelfiles as mf
from clipseek.cli.model import model
from clipseek.errors import ModelUnavailable


@pytest.fixture
def env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CLIPSEEK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return tmp_path


@pytest.fixture
def stalling_hub(monkeypatch) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """Answers the first request (clipseek's probe), then holds every later one open without a byte
    until the test ends (at most 30 s). Yields the paths requested."""
    seen: list[str] = []
    release = threading.Event()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # type: ignore[no-untyped-def]
            seen.append(self.path)
            if len(seen) == 1:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")
                return
            release.wait(30)

        do_HEAD = do_GET

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.server_address[1]}")
    try:
        yield seen
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()


def test_pull_from_a_hub_that_stalls_ends_at_the_stall_timeout(env, stalling_hub):  # type: ignore[no-untyped-def]
    t = time.monotonic()
    res = CliRunner().invoke(model, ["pull", "clip-vit-b32", "--stall-timeout", "1", "--deadline", "60"])
    took = time.monotonic() - t
    assert res.exit_code == 1, res.output
    assert "Error: cannot download openai/clip-vit-base-patch32: the hub at http://127.0.0.1:" in res.output
    assert "stalled (nothing received for 1 s)" in res.output
    assert took < 5, took
    assert len(stalling_hub) >= 2  # the probe was answered; the download's own request is the one that stalled
    assert not (env / "home" / "models" / "clip-vit-b32").exists()  # nothing left behind


def test_pull_ends_at_its_deadline(env, stalling_hub):  # type: ignore[no-untyped-def]
    t = time.monotonic()
    with pytest.raises(ModelUnavailable, match=r"cannot download openai/clip-vit-base-patch32: not finished within "
                                              r"the 1 s deadline"):
        mf.pull("clip-vit-b32", bounds=mf.DownloadBounds(stall_s=60, deadline_s=1))
    assert time.monotonic() - t < 5


def test_default_model_download_is_bounded_too(env, stalling_hub):  # type: ignore[no-untyped-def]
    said: list[str] = []
    t = time.monotonic()
    got = mf.resolve_default_model(None, notify=said.append, bounds=mf.DownloadBounds(stall_s=1, deadline_s=60))
    assert got == "offline" and time.monotonic() - t < 5
    assert len(said) == 1 and "stalled (nothing received for 1 s)" in said[0]


def test_unreachable_hub_says_why(env, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.clipseek-test.invalid")  # .invalid never resolves (RFC 6761)
    ok, why = mf.hub_answers(timeout=3)
    assert not ok
    assert why.startswith("the hub at http://hub.clipseek-test.invalid cannot be reached: DNS lookup of "
                          "hub.clipseek-test.invalid failed"), why
    res = CliRunner().invoke(model, ["pull", "clip-vit-b32"])
    assert res.exit_code == 1 and "DNS lookup of hub.clipseek-test.invalid failed" in res.output
    # a port nobody listens on
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert mf.hub_answers(timeout=3) == (False, f"the hub at http://127.0.0.1:{port} refused the connection")


def test_a_slow_but_steady_download_is_not_a_stall():  # type: ignore[no-untyped-def]
    """Only silence counts: progress every 0.2 s for 1.5 s passes a 1 s stall timeout."""
    from huggingface_hub import constants

    def fetch(bar_class):  # type: ignore[no-untyped-def]
        bar = bar_class(total=8, disable=True)
        for _ in range(8):
            time.sleep(0.2)
            bar.update(1)
        return "/done"

    assert mf._bounded(fetch, "x/y", mf.DownloadBounds(stall_s=1, deadline_s=10)) == Path("/done")
    assert constants.DOWNLOAD_CHUNK_SIZE <= 1 << 20  # progress comes at least once per MiB
