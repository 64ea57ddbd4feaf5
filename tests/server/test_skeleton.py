"""The service's shared parts: settings sources and their order, hashed keys, the access rules
(401/403/429), the JSON error shape, the body limit, request ids, and `clipseek serve` refusing to
listen beyond localhost without keys."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from clipseek import Engine
from clipseek.cli import cli
from clipseek.errors import ClipseekError, StoreUnavailable
from clipseek.server import Settings, create_app
from clipseek.server.deps import RateLimiter, Reader, Writer
from clipseek.server.keys import KeyStore

# ------------------------------------------------------------------------------------ settings


def test_settings_order_defaults_file_env_options(tmp_path):
    cfg = tmp_path / "clipseek.toml"
    cfg.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\nroots = ["/a"]\nmax_top = 50\nallow_private_urls = true\n')
    s = Settings.load(cfg, env={"CLIPSEEK_PORT": "9002", "CLIPSEEK_ROOTS": "/b:/c"}, host="127.0.0.1")
    assert (s.host, s.port, s.roots, s.max_top, s.allow_private_urls) == ("127.0.0.1", 9002, ["/b", "/c"], 50, True)
    assert s.max_upload_mb == 20.0 and s.auth == "auto" and s.cors_origins == []
    # CLIPSEEK_CONFIG names the file; CLIPSEEK_HOME is the data folder
    s = Settings.load(env={"CLIPSEEK_CONFIG": str(cfg), "CLIPSEEK_HOME": "/data"})
    assert (s.port, s.host, s.data_dir) == (9001, "0.0.0.0", "/data")


def test_settings_ignore_missing_default_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.load(env={}) == Settings()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nprot = 1\n", "unknown setting 'prot'"),
        ("[server]\nport = '80'\n", "setting 'port' must be int"),
        ("[server]\nmax_top = -1\n", "must not be negative"),
        ("[server]\nauth = 'maybe'\n", "auth must be 'auto', 'on' or 'off'"),
        ("[server\n", "not valid TOML"),
        ("server = 3\n", "[server] must be a table"),
    ],
)
def test_settings_file_errors_name_the_file(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ClipseekError, match="c.toml") as e:
        Settings.load(cfg, env={})
    assert message in str(e.value)


@pytest.mark.parametrize(
    "env, message",
    [({"CLIPSEEK_PORT": "x"}, "CLIPSEEK_PORT='x': expected a whole number"),
     ({"CLIPSEEK_ALLOW_PRIVATE_URLS": "perhaps"}, "expected true or false"),
     ({"CLIPSEEK_MAX_UPLOAD_MB": "lots"}, "expected a number")],
)
def test_settings_env_errors(env, message):
    with pytest.raises(ClipseekError) as e:
        Settings.load(env=env)
    assert message in str(e.value)


def test_missing_named_config_file_is_an_error(tmp_path):
    with pytest.raises(ClipseekError, match="cannot read configuration file"):
        Settings.load(tmp_path / "nope.toml", env={})


def test_local_only_hosts():
    assert Settings(host="127.0.0.1").local_only and Settings(host="::1").local_only
    assert not Settings(host="0.0.0.0").local_only and not Settings(host="10.0.0.5").local_only


# ------------------------------------------------------------------------------------ keys


def test_keys_are_stored_hashed_and_checked(tmp_path):
    ks = KeyStore(tmp_path / "keys.json")
    key, info = ks.create(name="desk", read_only=True)
    assert key.startswith("csk_") and len(key) > 40
    raw = (tmp_path / "keys.json").read_text()
    assert key not in raw and hashlib.sha256(key.encode()).hexdigest() in raw
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert ks.check(key) == info and info.read_only and info.name == "desk"
    assert ks.check(key + "x") is None and ks.check("") is None
    key2, info2 = ks.create()
    assert [k.id for k in KeyStore(tmp_path / "keys.json").list()] == [info.id, info2.id]
    ks.revoke(info.id)
    assert ks.check(key) is None and ks.check(key2) == info2
    with pytest.raises(ClipseekError, match="no API key with id 'zzz'"):
        ks.revoke("zzz")


def test_keys_cli_create_list_revoke(tmp_path):
    r = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "keys", "create", "--read-only", "--name", "ops", "--json"])
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["read_only"] is True and made["name"] == "ops"
    assert KeyStore(tmp_path / "keys.json").check(made["key"]).id == made["id"]
    listed = json.loads(CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "keys", "list", "--json"]).stdout)
    assert [(k["id"], k["read_only"]) for k in listed] == [(made["id"], True)]
    assert CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "keys", "revoke", made["id"]]).exit_code == 0
    assert KeyStore(tmp_path / "keys.json").list() == []


# ------------------------------------------------------------------------------------ rate limit


def test_rate_limiter_bucket():
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.wait_time("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.wait_time("a", now=100.0) == pytest.approx(0.5)
    assert rl.wait_time("b", now=100.0) == 0.0  # buckets are per caller
    assert rl.wait_time("a", now=100.5) == 0.0  # half a second refills one token at 2/s
    assert rl.wait_time("a", now=100.5) == pytest.approx(0.5)
    assert RateLimiter(rate=0, burst=1).wait_time("a") == 0.0


# ------------------------------------------------------------------------------------ access and errors


def _app(tmp_path, **settings):
    engine = Engine(tmp_path)
    app = create_app(engine, Settings(**settings))

    @app.get("/t/read")
    def read(key: Reader) -> dict:
        return {"key": key.id if key else None}

    @app.post("/t/write")
    def write(key: Writer) -> dict:
        return {"key": key.id if key else None}

    @app.get("/t/boom")
    def boom() -> dict:
        raise ClipseekError("a message for people")

    @app.get("/t/store-down")
    def store_down() -> dict:
        raise StoreUnavailable("the Milvus server at http://10.0.0.9:19530 is not answering")

    @app.get("/t/crash")
    def crash() -> dict:
        raise RuntimeError("secret internals")

    return app


def _client(app: FastAPI) -> httpx.Client:
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)


def test_open_on_localhost_without_keys(tmp_path):
    with _client(_app(tmp_path)) as c:
        assert c.get("/t/read").json() == {"key": None}
        assert c.post("/t/write").json() == {"key": None}


def test_keys_required_once_one_exists(tmp_path):
    app = _app(tmp_path)
    ro, ro_info = app.state.clipseek.keys.create(read_only=True)
    rw, rw_info = app.state.clipseek.keys.create()
    with _client(app) as c:
        r = c.get("/t/read")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert "clipseek keys create" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/t/read", headers={"Authorization": "Bearer nope"}).json()["error"]["message"] == "unknown API key"
        assert c.get("/t/read", headers={"Authorization": f"Bearer {ro}"}).json() == {"key": ro_info.id}
        assert c.get("/t/read", headers={"X-API-Key": ro}).json() == {"key": ro_info.id}
        assert c.get("/t/read", headers={"Api-Key": rw}).json() == {"key": rw_info.id}
        r = c.post("/t/write", headers={"Authorization": f"Bearer {ro}"})
        assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]
        assert c.post("/t/write", headers={"Authorization": f"Bearer {rw}"}).json() == {"key": rw_info.id}


def test_keys_required_beyond_localhost_even_without_keys(tmp_path):
    with _client(_app(tmp_path, host="0.0.0.0")) as c:
        assert c.get("/t/read").status_code == 401
    with _client(_app(tmp_path, auth="on")) as c:
        assert c.get("/t/read").status_code == 401
    with pytest.raises(ClipseekError, match="only when the server listens on localhost"):
        create_app(Engine(tmp_path), Settings(host="0.0.0.0", auth="off"))


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with _client(_app(tmp_path, rate_limit=0.5, rate_burst=2)) as c:
        assert [c.get("/t/read").status_code for _ in range(3)] == [200, 200, 429]
        r = c.get("/t/read")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) in (1, 2)


def test_error_shapes(tmp_path):
    with _client(_app(tmp_path)) as c:
        r = c.get("/t/boom")
        assert (r.status_code, r.json()) == (400, {"error": {"code": "bad_request", "message": "a message for people"}})
        r = c.get("/t/store-down")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "store_unavailable")
        assert r.json()["error"]["message"] == "the Milvus server at http://10.0.0.9:19530 is not answering"
        r = c.get("/t/crash")
        assert r.status_code == 500 and "secret" not in r.text and r.json()["error"]["code"] == "internal"
        r = c.get("/no/such/route")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        assert r.json()["error"]["message"] == "no such endpoint: GET /no/such/route"
        assert c.delete("/healthz").json()["error"]["code"] == "method_not_allowed"


def test_body_limit_and_request_id(tmp_path):
    with _client(_app(tmp_path, max_body_mb=0.001)) as c:
        r = c.post("/t/write", content=b"x" * 2000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert "1048 bytes" in r.json()["error"]["message"]
        ok = c.post("/t/write", content=b"x" * 10)
        assert ok.status_code == 200 and len(ok.headers["x-request-id"]) == 16
        assert c.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"


def test_healthz_readyz(tmp_path):
    Engine(tmp_path).create("v", dim=2)
    with _client(_app(tmp_path)) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/readyz").json() == {"status": "ready", "collections": 1}


def test_cors_off_by_default_and_on_when_configured(tmp_path):
    with _client(_app(tmp_path)) as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "http://x.example"}).headers
    with _client(_app(tmp_path, cors_origins=["http://x.example"])) as c:
        h = c.get("/healthz", headers={"Origin": "http://x.example"}).headers
        assert h["access-control-allow-origin"] == "http://x.example"


# ------------------------------------------------------------------------------------ clipseek serve


def test_serve_refuses_public_address_without_keys(tmp_path):
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "clipseek", "--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 1
    assert "refusing to serve on 0.0.0.0 without API keys" in p.stderr and "clipseek keys create" in p.stderr
    assert time.monotonic() - t0 < 30
