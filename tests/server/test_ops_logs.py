"""Structured JSON logs of a real ``clipseek serve``: one line per request with its request id,
method, path, status and time; the id comes back in X-Request-Id and is taken from the request
when it sends one."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import pytest

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def log_records(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def test_each_request_logs_one_json_line_with_its_request_id(serve: Callable[..., Any]) -> None:
    srv = serve()
    r1 = httpx.get(srv.url + "/healthz", headers={"X-Request-Id": "trace-4711"})
    r2 = httpx.get(srv.url + "/readyz")
    r3 = httpx.get(srv.url + "/no/such/route")
    assert srv.stop() == 0
    assert r1.status_code == 200 and r1.headers["x-request-id"] == "trace-4711"
    generated = r2.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    assert r3.status_code == 404 and r3.headers["x-request-id"] not in ("trace-4711", generated)

    records = log_records(srv.log())
    requests = [rec for rec in records if rec.get("message") == "request"]
    by_id = {rec["request_id"]: rec for rec in requests}
    assert set(by_id) >= {"trace-4711", generated, r3.headers["x-request-id"]}

    one = by_id["trace-4711"]
    assert (one["method"], one["path"], one["status"]) == ("GET", "/healthz", 200)
    assert one["logger"] == "clipseek.server" and one["level"] == "info"
    assert isinstance(one["ms"], float) and 0 <= one["ms"] < 10_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", one["time"])
    assert (by_id[generated]["path"], by_id[generated]["status"]) == ("/readyz", 200)
    missing = by_id[r3.headers["x-request-id"]]
    assert (missing["path"], missing["status"]) == ("/no/such/route", 404)
    # one line per request: the three requests above, each logged once
    assert sum(rec["request_id"] == "trace-4711" for rec in requests) == 1
    # every line of the log is JSON (uvicorn's own lines included), none is plain text
    lines = [ln for ln in srv.log().splitlines() if ln.strip() and not ln.startswith("clipseek: serving")]
    assert len(lines) == len(records)


def test_a_long_request_id_is_cut(serve: Callable[..., Any]) -> None:
    srv = serve()
    r = httpx.get(srv.url + "/healthz", headers={"X-Request-Id": "x" * 200})
    assert srv.stop() == 0
    assert r.headers["x-request-id"] == "x" * 64
    assert any(rec.get("request_id") == "x" * 64 for rec in log_records(srv.log()))
