"""Downloads through an HTTP(S) proxy: settings, NO_PROXY, the address guard, failures, limits.

Everything is on 127.0.0.1 and stopped at the end of its test: a forward proxy (``_proxy.py``:
it fetches absolute-form requests itself, tunnels CONNECT, and logs what it was asked) and the
image server of ``test_downloads.py``. "images.example" is public only in a faked resolver; the
proxy maps it to 127.0.0.1, and a direct (NO_PROXY) connection to its address goes to the image
server too. ``connects`` records every address this process connects to, so a test can show that
a proxied download never contacted its target itself.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from _httpd import serving
from _proxy import ForwardProxy
from click.testing import CliRunner
from test_downloads import BLUE, FAST, GREEN, PUBLIC_IP, RED, Server

import clipseek
from clipseek import net
from clipseek.errors import ClipseekError, DownloadError

ADVICE = "pass allow_private_urls=True (CLI: --allow-private-urls, or CLIPSEEK_ALLOW_PRIVATE_URLS=1) to allow it"


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as srv:
        yield srv


@pytest.fixture
def connects(server: Server, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """'images.example' resolves to a public address here; a direct connection to that address
    reaches the image server. Returns the (address, port) of every connection opened."""
    opened: list[tuple[str, int]] = []
    real_resolve = net.resolve

    def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_IP] if host == "images.example" else real_resolve(host, port)

    def connect(address: str, port: int, timeout: float) -> socket.socket:
        opened.append((address, port))
        assert address in (PUBLIC_IP, "127.0.0.1", "::1"), address  # nothing else is ever contacted
        if address == PUBLIC_IP:
            return socket.create_connection(("127.0.0.1", server.server_address[1]), timeout)
        return socket.create_connection((address, port), timeout)

    monkeypatch.setattr(net, "resolve", resolve)
    monkeypatch.setattr(net, "connect", connect)
    monkeypatch.delenv(net.ALLOW_PRIVATE_ENV, raising=False)
    return opened


@pytest.fixture(autouse=True)
def _forget_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "_UNRESOLVED", {})


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy({"images.example": "127.0.0.1"}) as p:
        yield p


def _public(server: Server, path: str) -> str:
    return f"http://images.example:{server.server_address[1]}{path}"


def _fail(url: str, proxy: str | None, limits: net.Limits = FAST, allow_private: bool | None = None) -> DownloadError:
    with net.Downloader(limits, allow_private=allow_private, proxy=proxy) as d, pytest.raises(DownloadError) as info:
        d.fetch(url)
    return info.value


def test_http_downloads_go_through_the_proxy(server: Server, proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    red, blue = _public(server, "/img/red/a.png"), _public(server, "/redirect-to//img/blue/b.png")
    with net.Downloader(FAST, proxy=proxy.url) as d:
        assert d.fetch(red) == RED
        assert d.fetch(blue) == BLUE  # the redirect is followed, through the proxy again
    assert proxy.log == [red, blue, _public(server, "/img/blue/b.png")]
    assert server.hits["/img/red/a.png"] == 1 and server.hits["/img/blue/b.png"] == 1
    assert set(connects) == {("127.0.0.1", proxy.port)}  # only the proxy: never the target itself
    assert proxy.auth == [None, None, None]


def test_proxy_credentials_are_sent_and_never_shown(server: Server, proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    url = _public(server, "/img/green/g.png")
    secret = f"http://alice:s%40cret@127.0.0.1:{proxy.port}"
    with net.Downloader(FAST, proxy=secret) as d:
        assert d.fetch(url) == GREEN
        assert str(d.proxies.http) == f"http://127.0.0.1:{proxy.port}"
    assert proxy.auth == ["Basic " + base64.b64encode(b"alice:s@cret").decode()]
    e = _fail(_public(server, "/missing"), secret)
    assert (str(e), e.reason) == (f"{_public(server, '/missing')}: HTTP 404 Not Found", "http_404")
    with pytest.raises(ClipseekError) as info:
        net.parse_proxy("http://alice:s3cret@proxy:x", "--proxy")
    assert "s3cret" not in str(info.value) and "alice:***@proxy:x" in str(info.value)


def test_private_targets_are_refused_before_the_proxy_is_asked(server: Server, proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    """The proxy is on loopback and is used; a loopback (or private) target is refused, also by name
    and after a redirect, and the proxy never hears of it."""
    via = f"(not sent to the proxy http://127.0.0.1:{proxy.port})"
    local = f"{server.base}/img/red/x.png"
    e = _fail(local, proxy.url)
    assert e.reason == "refused_address"
    assert str(e) == f"{local}: refused: 127.0.0.1 resolves to 127.0.0.1, a local or private address {via}; {ADVICE}"
    e = _fail(f"http://localhost:{server.server_address[1]}/img/red/x.png", proxy.url)
    assert e.reason == "refused_address" and "refused: localhost resolves to " in str(e) and via in str(e)
    e = _fail("http://169.254.169.254/latest/meta-data/", proxy.url)
    assert "refused: 169.254.169.254 resolves to 169.254.169.254" in str(e) and via in str(e)
    e = _fail("http://[fd00::1]/x.png", proxy.url)
    assert "refused: fd00::1 resolves to fd00::1" in str(e)
    hop = _public(server, f"/redirect-to/{local}")
    e = _fail(hop, proxy.url)
    assert e.reason == "refused_address" and str(e).startswith(f"{hop}: refused: 127.0.0.1 resolves to 127.0.0.1")
    assert proxy.log == [hop]  # the first hop only
    assert server.hits["/img/red/x.png"] == 0
    # allowed: the loopback target goes through the proxy like any other
    with net.Downloader(FAST, allow_private=True, proxy=proxy.url) as d:
        assert d.fetch(local) == RED
    assert proxy.log[-1] == local and server.hits["/img/red/x.png"] == 1


def test_a_name_this_machine_cannot_resolve_is_left_to_the_proxy(server: Server, proxy: ForwardProxy, connects, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Split DNS: inside many networks only the proxy resolves outside names. The failed lookup is
    remembered for a minute (a resolver that times out would otherwise stall every download)."""
    proxy.hosts["outside.example"] = "127.0.0.1"
    checked = net.resolve
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        if host == "outside.example":
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return checked(host, port)

    monkeypatch.setattr(net, "resolve", resolve)
    url = f"http://outside.example:{server.server_address[1]}/img/green/1.png"
    assert net.fetch_url(url, proxy=proxy.url) == GREEN
    assert net.fetch_url(url, proxy=proxy.url) == GREEN
    assert proxy.log == [url, url] and asked == ["outside.example"]
    assert net.UNRESOLVED_TTL - 5 < net._UNRESOLVED["outside.example"] - time.monotonic() <= net.UNRESOLVED_TTL
    net._UNRESOLVED["outside.example"] = time.monotonic() - 1  # the minute is over
    assert net.fetch_url(url, proxy=proxy.url) == GREEN
    assert asked == ["outside.example"] * 2  # asked again once the minute is over


def test_no_proxy_hosts_are_reached_directly(server: Server, proxy: ForwardProxy, connects, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url = _public(server, "/img/red/n.png")
    monkeypatch.setenv("NO_PROXY", "localhost, .example")
    assert net.fetch_url(url, proxy=proxy.url) == RED
    assert proxy.log == [] and connects == [(PUBLIC_IP, server.server_address[1])]
    # a bypassed loopback target meets the direct guard (no proxy named in the refusal)
    e = _fail(f"http://localhost:{server.server_address[1]}/img/red/x.png", proxy.url)
    assert e.reason == "refused_address" and "not sent to the proxy" not in str(e)
    monkeypatch.setenv("NO_PROXY", "other.example")
    assert net.fetch_url(url, proxy=proxy.url) == RED
    assert proxy.log == [url]


@pytest.mark.parametrize(
    ("host", "entries", "bypassed"),
    [
        ("images.example", "images.example", True),
        ("a.images.example", "images.example", True),
        ("a.images.example", ".images.example", True),
        ("IMAGES.example.", "images.EXAMPLE", True),
        ("badimages.example", "images.example", False),
        ("images.example", "a.images.example", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("192.168.1.1", "192.168.1.10", False),
        ("::1", "[::1]", True),
        ("fd00::5", "fd00::/8", True),
        ("10.1.2.3", "fd00::/8", False),
        ("anything.example", "x.example, *", True),
        ("images.example", "", False),
        ("[::1]", "::1", True),  # a bracketed IPv6 host is the address
        ("images.example", "images.example.", True),  # a trailing dot on the entry too
        ("10.9.9.9", "10.1.2.3/8", True),  # host bits in a CIDR entry are ignored, as curl does
        ("10.1.2.3", "x.example, 10.0.0.0/8", True),  # a name entry does not end the search for an IP
        ("xn--bcher-kva.example", "bücher.example", True),  # a Unicode entry matches the URL's IDNA host
        ("a.xn--bcher-kva.example", "Bücher.example", True),
        ("xn--bcher-kva.example", "bucher.example", False),
        ("11.1.2.3", "x.example, 10.0.0.0/8", False),
    ],
)
def test_no_proxy_rules(host: str, entries: str, bypassed: bool) -> None:
    no_proxy = net.proxies_from(env={"https_proxy": "http://p:1", "no_proxy": entries}).no_proxy
    assert net.bypasses_proxy(host, no_proxy) is bypassed


def _urls(p: net.Proxies) -> tuple[str | None, str | None]:
    return tuple(f"{x.url} {x.source}" if x else None for x in (p.http, p.https))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("proxy", "env", "http", "https"),
    [
        (None, {}, None, None),
        (None, {"https_proxy": "http://a:1"}, None, "http://a:1 https_proxy"),
        (None, {"HTTPS_PROXY": "a:1"}, None, "http://a:1 HTTPS_PROXY"),  # no scheme: http://, as curl
        (None, {"http_proxy": "http://c:3", "HTTP_PROXY": "http://b:2"}, "http://c:3 http_proxy", None),
        (None, {"HTTP_PROXY": "http://b:2"}, "http://b:2 HTTP_PROXY", None),
        (None, {"HTTP_PROXY": "http://b:2", "REQUEST_METHOD": "GET"}, None, None),  # CGI: httpoxy
        # under CGI only HTTP_PROXY can come from a request header (Proxy:); the others still count
        (None, {"HTTP_PROXY": "http://b:2", "ALL_PROXY": "http://d:4", "HTTPS_PROXY": "http://a:1", "REQUEST_METHOD": "GET"},
         "http://d:4 ALL_PROXY", "http://a:1 HTTPS_PROXY"),
        (None, {"http_proxy": "http://c:3", "REQUEST_METHOD": "GET"}, "http://c:3 http_proxy", None),
        (None, {"ALL_PROXY": "https://d"}, "https://d:443 ALL_PROXY", "https://d:443 ALL_PROXY"),
        (None, {"all_proxy": "http://d:4", "https_proxy": "http://a:1"}, "http://d:4 all_proxy", "http://a:1 https_proxy"),
        (None, {"https_proxy": " ", "all_proxy": "http://d:4"}, "http://d:4 all_proxy", "http://d:4 all_proxy"),
        (None, {"https_proxy": "http://a:1", "CLIPSEEK_PROXY": "http://e:5"}, "http://e:5 CLIPSEEK_PROXY", "http://e:5 CLIPSEEK_PROXY"),
        (None, {"https_proxy": "http://a:1", "CLIPSEEK_PROXY": ""}, None, None),
        ("http://f:6", {"https_proxy": "http://a:1", "CLIPSEEK_PROXY": ""}, "http://f:6 proxy", "http://f:6 proxy"),
        ("", {"https_proxy": "http://a:1", "all_proxy": "http://d:4"}, None, None),
        (" \t", {"https_proxy": "http://a:1"}, None, None),  # blank is "" too, not a malformed URL
        (None, {"https_proxy": "http://a:1", "CLIPSEEK_PROXY": " "}, None, None),
        ("http://[::1]:3128/", {}, "http://[::1]:3128 proxy", "http://[::1]:3128 proxy"),
    ],
)
def test_which_proxy_a_setting_and_the_environment_give(proxy, env, http, https) -> None:  # type: ignore[no-untyped-def]
    assert _urls(net.proxies_from(proxy, env)) == (http, https)


def test_no_proxy_entries_apply_to_every_proxy_but_none() -> None:
    entries = "a.example,b.example , .c.example,,"
    assert net.proxies_from("http://p:1", {"no_proxy": entries}).no_proxy == ("a.example", "b.example", ".c.example")
    assert net.proxies_from(None, {"ALL_PROXY": "http://p:1", "NO_PROXY": "x.example"}).no_proxy == ("x.example",)
    assert net.proxies_from(None, {"CLIPSEEK_PROXY": "http://p:1", "no_proxy": " ", "NO_PROXY": "y"}).no_proxy == ("y",)
    assert net.proxies_from("", {"no_proxy": "x.example"}) == net.Proxies()


def test_each_scheme_goes_to_its_own_proxy_unless_bypassed() -> None:
    a, b = net.parse_proxy("http://a:1", "http_proxy"), net.parse_proxy("http://b:2", "https_proxy")
    proxies = net.Proxies(a, b, ("direct.example",))
    assert proxies.for_url("http", "images.example") is a
    assert proxies.for_url("https", "images.example") is b
    assert proxies.for_url("ftp", "images.example") is None
    assert proxies.for_url("https", "cdn.direct.example") is None
    assert proxies.for_url("http", "direct.example") is None
    assert net.Proxies(a, None).for_url("https", "images.example") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" http://a%40corp:pa%3Ass@proxy.corp:3128\n", net.Proxy("http", "proxy.corp", 3128, "proxy", "a@corp", "pa:ss")),
        ("proxy.corp", net.Proxy("http", "proxy.corp", 80, "proxy")),
        ("HTTPS://Proxy.Corp/", net.Proxy("https", "proxy.corp", 443, "proxy")),
        ("http://alice@proxy.corp:8080", net.Proxy("http", "proxy.corp", 8080, "proxy", "alice", "")),
        ("http://bücher.example:3128", net.Proxy("http", "xn--bcher-kva.example", 3128, "proxy")),
        ("http://[fd00::1]:3128", net.Proxy("http", "fd00::1", 3128, "proxy")),
    ],
)
def test_a_proxy_url_is_read_as_curl_reads_it(value: str, expected: net.Proxy) -> None:
    assert net.parse_proxy(value) == expected


def test_a_proxy_prints_without_credentials_and_with_its_setting() -> None:
    assert str(net.parse_proxy("http://u:pw@p:1")) == "http://p:1"
    assert str(net.parse_proxy("https://u:pw@[::1]", "https_proxy")) == "https://[::1]:443 (from https_proxy)"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("alice:s3cret@proxy:x", "alice:***@proxy:x"),  # no scheme
        ("http://alice:s@cret@proxy:x", "http://alice:***@proxy:x"),  # an unencoded @ in the password
        ("http://alice:s3:cret@proxy:x", "http://alice:***@proxy:x"),  # an unencoded : in the password
        ("http://alice@proxy:x", "http://alice@proxy:x"),  # no password: nothing hidden
    ],
)
def test_a_bad_proxy_url_is_shown_without_its_password(value: str, shown: str) -> None:
    with pytest.raises(ClipseekError) as info:
        net.parse_proxy(value, "--proxy")
    assert str(info.value) == (
        f"--proxy={shown!r}: not a proxy URL (Port could not be cast to integer value as 'x'); "
        "expected http://host:port or https://host:port"
    )


def test_the_environment_is_honoured_and_an_empty_proxy_ignores_it(server: Server, proxy: ForwardProxy, connects, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url = _public(server, "/img/blue/e.png")
    monkeypatch.setenv("http_proxy", proxy.url)
    assert net.fetch_url(url) == BLUE
    assert proxy.log == [url]
    assert net.fetch_url(url, proxy="") == BLUE  # direct
    assert proxy.log == [url] and connects[-1] == (PUBLIC_IP, server.server_address[1])
    monkeypatch.setenv("CLIPSEEK_PROXY", "")  # clipseek's own switch: no proxy for clipseek only
    assert net.fetch_url(url) == BLUE
    assert proxy.log == [url]


def test_cli_index_uses_the_environment_and_proxy_empty_ignores_it(  # type: ignore[no-untyped-def]
    server: Server, proxy: ForwardProxy, connects, tmp_path: Path
) -> None:
    from clipseek.cli import cli

    urls = [_public(server, "/img/red/1.png"), _public(server, "/img/blue/2.png")]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    base = ["--data-dir", str(tmp_path / "d"), "index", str(tmp_path / "urls.txt"), "-c", "web", "--model", "test-colors"]
    res = CliRunner().invoke(cli, [*base, "-q", "--json"], env={"HTTP_PROXY": proxy.url})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["count"] == 2
    assert sorted(proxy.log) == sorted(urls)
    more = _public(server, "/img/green/3.png")
    (tmp_path / "urls.txt").write_text("\n".join([*urls, more]) + "\n")
    res = CliRunner().invoke(cli, [*base, "-q", "--json", "--proxy", ""], env={"HTTP_PROXY": proxy.url})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["count"] == 3
    assert sorted(proxy.log) == sorted(urls) and server.hits["/img/green/3.png"] == 1  # fetched directly
    res = CliRunner().invoke(cli, [*base, "--proxy", "ftp://proxy.corp:21"])
    assert res.exit_code == 2
    assert (
        "Error: --proxy='ftp://proxy.corp:21': a proxy URL starts with http:// or https://, not ftp://; "
        "expected http://host:port or https://host:port" in res.output
    )


def test_cli_search_and_serve_take_the_proxy(server: Server, proxy: ForwardProxy, connects, engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    from clipseek.cli import cli

    c = engine.create("c", model="test-colors")
    c.add_vectors(["x"], [c.encoder.embed_text("blue")])
    url = _public(server, "/img/blue/q.png")
    res = CliRunner().invoke(cli, ["--data-dir", str(engine.data_dir), "search", "-c", "c", "--image", url, "--proxy", proxy.url])
    assert res.exit_code == 0, res.output
    assert proxy.log == [url] and "   1  " in res.output and res.output.rstrip().endswith("x")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    serve = ["--data-dir", str(engine.data_dir), "serve", "--port", "1"]
    res = CliRunner().invoke(cli, [*serve, "--proxy", "socks5://p:1080"])
    assert res.exit_code == 2 and "Error: --proxy='socks5://p:1080': SOCKS proxies are not supported" in res.output
    res = CliRunner().invoke(cli, serve, env={"https_proxy": "ftp://p"})  # checked at start, not per request
    assert res.exit_code == 1 and "Error: https_proxy='ftp://p': a proxy URL starts with http:// or https://" in res.output


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("ftp://proxy.corp:21", "a proxy URL starts with http:// or https://, not ftp://"),
        ("socks5://proxy.corp:1080", "SOCKS proxies are not supported, only HTTP(S) proxies"),
        ("http://proxy.corp:99999", "not a proxy URL (Port out of range 0-65535)"),
        ("http://proxy.corp:port", "not a proxy URL (Port could not be cast to integer value as 'port')"),
        ("http://proxy.corp:0", "not a proxy URL (port 0)"),
        ("http://", "no proxy host"),
        ("http://wpad.corp/proxy.pac", "a proxy URL has no path (PAC files are not supported)"),
        ("http://proxy.corp:3128/?pac=1", "a proxy URL has no path (PAC files are not supported)"),
        ("http://proxy.corp:3128#x", "a proxy URL has no path (PAC files are not supported)"),
        ("http://proxy corp:3128", "spaces in the URL"),
    ],
)
def test_a_bad_proxy_url_is_named_with_its_setting(value: str, why: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tail = "; expected http://host:port or https://host:port"
    with pytest.raises(ClipseekError) as info:
        net.Downloader(proxy=value)
    assert str(info.value) == f"proxy={value!r}: {why}{tail}"
    monkeypatch.setenv("HTTPS_PROXY", value)
    with pytest.raises(ClipseekError) as info:
        net.fetch_url("https://images.example/x.png")
    assert str(info.value) == f"HTTPS_PROXY={value!r}: {why}{tail}"


def test_service_settings_name_a_bad_proxy(tmp_path: Path) -> None:
    from clipseek.server import Settings

    cfg = tmp_path / "clipseek.toml"
    cfg.write_text('[server]\nproxy = "socks5://proxy.corp:1080"\n')
    with pytest.raises(ClipseekError, match=rf"^{cfg} \[server\] proxy='socks5://proxy.corp:1080': SOCKS proxies"):
        Settings.load(cfg, env={})
    with pytest.raises(ClipseekError, match=r"^CLIPSEEK_PROXY='ftp://x': a proxy URL starts with http://"):
        Settings.load(env={"CLIPSEEK_PROXY": "ftp://x"})
    with pytest.raises(ClipseekError, match=r"^--proxy='http://p:0x': not a proxy URL"):
        Settings.load(env={}, proxy="http://p:0x")
    cfg.write_text('[server]\nproxy = "http://proxy.corp:3128"\n')
    assert Settings.load(cfg, env={}).proxy == "http://proxy.corp:3128"
    assert Settings.load(cfg, env={"CLIPSEEK_PROXY": ""}).proxy == ""  # env wins: none
    assert Settings.load(env={}).proxy is None


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_a_dead_proxy_is_a_per_item_failure(engine, server: Server, connects) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{_dead_port()}"
    c = engine.create("web", model="test-colors", store="memory")
    refs = [clipseek.ImageRef(id=u, url=u) for u in (_public(server, "/img/red/1.png"), _public(server, "/img/blue/2.png"))]
    rep = c.index(refs, proxy=dead)
    assert rep.added == 0 and len(rep.failed) == 2
    for (id_, message, reason, _), ref in zip(sorted(rep.failed), sorted(refs, key=lambda r: r.id)):
        assert (id_, reason) == (ref.id, "proxy_failed")
        assert message.startswith(f"cannot connect to the proxy {dead}: [Errno 111]"), message
    assert sum(server.hits.values()) == 0
    assert c.index(refs, proxy="").added == 2  # the job goes on; without the proxy they download


def test_a_refused_tunnel_is_a_proxy_failure(proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    proxy.refuse_connect = True
    e = _fail("https://images.example/x.png", proxy.url)
    assert (str(e), e.reason) == (
        f"https://images.example/x.png: the proxy http://127.0.0.1:{proxy.port} refused the tunnel: 403 Forbidden",
        "proxy_failed",
    )
    assert proxy.log == ["CONNECT images.example:443"]


def test_limits_hold_through_the_proxy(server: Server, proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    e = _fail(_public(server, "/huge"), proxy.url, net.Limits(max_bytes=100_000, retries=0))
    assert (e.reason, str(e)) == ("too_large", f"{_public(server, '/huge')}: larger than 100,000 bytes")
    e = _fail(_public(server, "/loop/0"), proxy.url)
    assert e.reason == "too_many_redirects" and len(proxy.log) == 1 + 6
    e = _fail(_public(server, "/page.html"), proxy.url)
    assert (e.reason, str(e)) == ("not_an_image", f"{_public(server, '/page.html')}: not an image (text/html)")
    one_try = net.Limits(connect_timeout=0.5, read_timeout=0.5, deadline=5.0, retries=1, backoff=0.01)
    t0 = time.monotonic()
    e = _fail(_public(server, "/slow"), proxy.url, one_try)
    assert (e.reason, str(e)) == ("timeout", f"{_public(server, '/slow')}: timed out waiting for data (0.5 s) (2 attempts)")
    assert time.monotonic() - t0 < 3.0
    e = _fail(_public(server, "/always-500"), proxy.url)
    assert (e.reason, server.hits["/always-500"]) == ("http_500", 3)  # retried through the proxy


# ------------------------------------------------------------------ https: CONNECT, TLS to the proxy


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for images.example and 127.0.0.1, trusted by the downloads here."""
    import httpx

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=images.example", "-addext", "subjectAltName=DNS:images.example,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: ssl.create_default_context(cafile=str(cert)))
    return ctx, cert


class _QuietServer(Server):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # /silent answers after the client gave up: the write fails, as it should


@pytest.fixture
def https_server(tls: tuple[ssl.SSLContext, Path]) -> Iterator[Server]:
    srv = _QuietServer()
    srv.socket = tls[0].wrap_socket(srv.socket, server_side=True)
    with serving(srv):
        yield srv


@pytest.mark.parametrize("proxy_tls", [False, True], ids=["http-proxy", "https-proxy"])
def test_https_goes_through_a_connect_tunnel(  # type: ignore[no-untyped-def]
    https_server: Server, tls, connects, monkeypatch, proxy_tls: bool
) -> None:
    """CONNECT to images.example:PORT, TLS to the image server inside the tunnel (and, to an
    https:// proxy, inside the proxy's own TLS); the deadline still holds on the tunnelled stream."""
    port = https_server.server_address[1]
    with ForwardProxy({"images.example": "127.0.0.1"}, tls=tls[0] if proxy_tls else None) as proxy:
        url = f"https://images.example:{port}/img/red/t.png"
        with net.Downloader(FAST, proxy=proxy.url) as d:
            assert d.fetch(url) == RED
            assert d.fetch(f"https://images.example:{port}/img/blue/t.png") == BLUE
        assert proxy.log == [f"CONNECT images.example:{port}"] * 2  # the image server closes each connection
        assert https_server.hits["/img/red/t.png"] == 1
        assert set(connects) == {("127.0.0.1", proxy.port)}
        patient = net.Limits(read_timeout=30.0, deadline=1.0, retries=0)
        t0 = time.monotonic()
        e = _fail(f"https://images.example:{port}/silent", proxy.url, patient)
        assert (e.reason, str(e)) == ("timeout", f"https://images.example:{port}/silent: download took longer than 1 s")
        assert time.monotonic() - t0 < 2.5


def test_service_downloads_image_urls_through_its_proxy(engine, server: Server, proxy: ForwardProxy, connects) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from clipseek.server import Settings, create_app

    engine.create("c", model="test-colors")
    url = _public(server, "/img/blue/s.png")

    def client(**settings: object) -> TestClient:
        return TestClient(create_app(engine, Settings(data_dir=str(engine.data_dir), **settings)))  # type: ignore[arg-type]

    with client(proxy=proxy.url) as c:
        r = c.post("/v1/collections/c/records", json={"records": [{"url": url}]})
        assert r.status_code == 200, r.text
        r = c.post("/v1/collections/c/search", json={"image_url": f"{server.base}/img/blue/s.png"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "refused_address"
        assert "not sent to the proxy" in r.json()["error"]["message"]
    assert proxy.log == [url]
    with client(proxy=f"http://127.0.0.1:{_dead_port()}") as c:
        r = c.post("/v1/collections/c/search", json={"image_url": url})
        assert r.status_code == 502 and r.json()["error"]["code"] == "proxy_failed"
        assert "cannot connect to the proxy" in r.json()["error"]["message"]

