"""The CLI in process (click's CliRunner), on the persistent default store, with the test encoder."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipseek.cli import cli


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")

    def invoke(*args: str, ok: bool = True, input: str | None = None):  # type: ignore[no-untyped-def]
        res = runner.invoke(cli, ["--data-dir", data, *args], input=input, catch_exceptions=False)
        if ok:
            assert res.exit_code == 0, res.output
        return res

    return invoke


@pytest.fixture
def indexed(run, photo_dir):  # type: ignore[no-untyped-def]
    res = run("index", str(photo_dir), "-c", "p", "--model", "test-colors", "-q")
    assert f"{photo_dir}: 5 added, 0 updated, 0 unchanged, 0 failed" in res.output
    assert "collection 'p' now holds 5 images" in res.output
    return photo_dir


def hits(res) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(res.output)["hits"]


def test_search_text_json(run, indexed) -> None:  # type: ignore[no-untyped-def]
    res = run("search", "red", "-c", "p", "--json", "--top", "3")
    out = json.loads(res.output)
    assert out["query"] == {"kind": "text", "text": "red"}
    assert out["model"] == "test-colors" and len(out["hits"]) == 3
    top = out["hits"][0]
    assert Path(top["id"]).name == "red.jpg"
    assert top["metadata"]["file_name"] == "red.jpg" and 0 <= top["score"] <= 1 and -1 <= top["cosine"] <= 1


def test_search_chinese_text_table(run, indexed) -> None:  # type: ignore[no-untyped-def]
    res = run("search", "绿色", "-c", "p", "-n", "1")
    lines = res.output.splitlines()
    assert lines[0].startswith("1 results for text query '绿色' in 'p'")
    assert lines[2].split()[0] == "1" and lines[2].endswith("green.png")


def test_search_image_like_vector_where(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = tmp_path / "q.png"
    Image.open(indexed / "blue.webp").resize((40, 30)).save(q)
    assert Path(hits(run("search", "--image", str(q), "-c", "p", "--json", "-n", "1"))[0]["id"]).name == "blue.webp"
    like = hits(run("search", "--like", str(indexed / "blue.webp"), "-c", "p", "--json"))
    assert len(like) == 4 and all(Path(h["id"]).name != "blue.webp" for h in like)
    sub = hits(run("search", "red", "-c", "p", "--json", "-w", "folder=sub"))
    assert sorted(Path(h["id"]).name for h in sub) == ["white.gif", "yellow.bmp"]


def test_search_vector_from_json_and_bad_dimension(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from clipseek.plugins import get_registry

    vec = get_registry().encoder_class("test-colors")().embed_text("yellow")
    np.save(tmp_path / "v.npy", vec)
    res = run("search", "--vector", f"@{tmp_path / 'v.npy'}", "-c", "p", "--json", "-n", "1")
    assert Path(hits(res)[0]["id"]).name == "yellow.bmp"
    res = run("search", "--vector", json.dumps(vec.tolist()), "-c", "p", "--json", "-n", "1")
    assert Path(hits(res)[0]["id"]).name == "yellow.bmp"
    res = run("search", "--vector", "[1, 0, 0]", "-c", "p", ok=False)
    assert res.exit_code == 1
    assert "Error: wrong vector dimension: got 3, the collection holds 48-d vectors" in res.output


def test_threshold_cuts_weak_matches(run, indexed) -> None:  # type: ignore[no-untyped-def]
    all_hits = hits(run("search", "red", "-c", "p", "--json"))
    strict = hits(run("search", "red", "-c", "p", "--json", "--threshold", "0.5"))
    assert [h["id"] for h in strict] == [h["id"] for h in all_hits if h["score"] >= 0.5]


def test_errors_are_clear(run, indexed) -> None:  # type: ignore[no-untyped-def]
    res = run("search", "red", "-c", "nope", ok=False)
    assert res.exit_code == 1 and "Error: no collection 'nope'" in res.output
    res = run("search", "red", "-c", "p", "-w", "camera=1", ok=False)
    assert "Error: unknown filter field 'camera'" in res.output
    res = run("search", "red", "-c", "p", "-w", "folder", ok=False)
    assert "Error: cannot parse filter 'folder'" in res.output
    res = run("search", "--like", "missing-id", "-c", "p", ok=False)
    assert "Error: no record 'missing-id' in collection 'p'" in res.output
    res = run("index", "/no/such/folder", "-c", "p", ok=False)
    assert "Error: /no/such/folder: no such file or folder" in res.output


def test_index_reports_bad_files_and_resumes(run, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "in"
    make_image(d / "a.png", (200, 0, 0))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    res = run("index", str(d), "-c", "x", "--model", "test-colors", "-q", "--json")
    out = json.loads(res.output)
    assert out["count"] == 1
    src = out["sources"][0]
    assert src["added"] == 1 and [Path(f["id"]).name for f in src["failed"]] == ["broken.jpg"]
    make_image(d / "b.png", (0, 200, 0))
    res = run("index", str(d), "-c", "x", "-q")
    assert "1 added, 0 updated, 1 unchanged, 1 failed" in res.output
    assert "skipped" in res.output and "broken.jpg" in res.output


def test_info_and_delete(run, indexed) -> None:  # type: ignore[no-untyped-def]
    info = json.loads(run("info", "p", "--json").output)
    assert info["count"] == 5 and info["model"]["name"] == "test-colors" and info["model"]["dim"] == 48
    assert {"folder", "file_name", "width", "height", "path"} <= set(info["fields"])
    assert run("info").output.startswith("p: 5 images, model test-colors")
    res = run("delete", str(indexed / "red.jpg"), "nope", "-c", "p")
    assert "deleted 1 records from 'p' (1 ids not found)" in res.output
    res = run("delete", "-c", "p", "-w", "folder=sub")
    assert "deleted 2 records" in res.output
    assert json.loads(run("info", "p", "--json").output)["count"] == 2
    res = run("delete", "-c", "p", "--all", input="n\n", ok=False)
    assert res.exit_code == 1 and json.loads(run("info", "p", "--json").output)["count"] == 2
    assert "collection 'p' deleted" in run("delete", "-c", "p", "--all", "--yes").output
    assert "no collections" in run("info").output


def test_search_by_url(run, indexed) -> None:  # type: ignore[no-untyped-def]
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(indexed))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        res = run("search", "--image", f"{base}/green.png", "-c", "p", "--json", "-n", "1", "--allow-private-urls")
        assert Path(hits(res)[0]["id"]).name == "green.png"
        res = run("search", "--image", f"{base}/missing.png", "-c", "p", "--allow-private-urls", ok=False)
        assert "HTTP 404" in res.output
        res = run("search", "--image", f"{base}/green.png", "-c", "p", ok=False)
        assert res.exit_code == 1
        assert f"Error: {base}/green.png: refused: 127.0.0.1 resolves to 127.0.0.1, a local or private address" in res.output
    finally:
        srv.shutdown()
        srv.server_close()


def test_help_explains_commands(run) -> None:  # type: ignore[no-untyped-def]
    out = run("--help").output
    for cmd in ("index", "search", "info", "delete", "demo", "model", "classify", "stores"):
        assert f"  {cmd}" in out
    assert "--threshold" in run("search", "--help").output


def test_search_and_info_work_while_another_engine_indexes(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import clipseek

    with clipseek.Engine(tmp_path / "data") as writer:
        writer.open("p")  # holds the collection's write lock, as a running `clipseek index` would
        assert Path(hits(run("search", "red", "-c", "p", "--json", "-n", "1"))[0]["id"]).name == "red.jpg"
        assert json.loads(run("info", "p", "--json").output)["count"] == 5
        res = run("index", str(indexed), "-c", "p", "-q", ok=False)
        assert res.exit_code == 1 and "is already open" in res.output


def test_image_grid_decodes_the_query_image_once(run, indexed, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import clipseek.engine
    import clipseek.grid  # noqa: F401 - imported first, so the thumbnails of the hits are not counted
    import clipseek.images

    opened: list[str] = []
    real = clipseek.images.load_image

    def counting(source, **kw):  # type: ignore[no-untyped-def]
        opened.append(str(source))
        return real(source, **kw)

    monkeypatch.setattr(clipseek.images, "load_image", counting)
    q = str(indexed / "blue.webp")
    res = run("search", "--image", q, "-c", "p", "--grid", str(tmp_path / "g.png"), "-n", "2")
    assert f"grid written to {tmp_path / 'g.png'}" in res.output
    assert opened.count(q) == 1


def test_control_characters_in_ids_are_escaped_in_the_table(run, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "odd"
    make_image(d / "two\nlines.png", (220, 30, 30))
    make_image(d / "tab\there.png", (30, 200, 40))
    make_image(d / "红色.png", (220, 30, 30))
    run("index", str(d), "-c", "odd", "--model", "test-colors", "-q")
    out = run("search", "red", "-c", "odd").output.splitlines()
    assert len(out) == 2 + 3  # summary, header, one line per hit
    rows = {line.split("  ")[-1] for line in out[2:]}
    assert rows == {f"{d}/two\\nlines.png", f"{d}/tab\\there.png", f"{d}/红色.png"}
    raw = json.loads(run("search", "red", "-c", "odd", "--json").output)["hits"]
    assert {h["id"] for h in raw} == {f"{d}/two\nlines.png", f"{d}/tab\there.png", f"{d}/红色.png"}


def test_query_input_errors(run, indexed) -> None:  # type: ignore[no-untyped-def]
    res = run("search", "--image", "", "-c", "p", ok=False)
    assert res.exit_code == 1 and "Error: empty image path: give the path of an image file" in res.output
    two = json.dumps([[1.0] * 48, [0.5] * 48])
    res = run("search", "--vector", two, "-c", "p", ok=False)
    assert res.exit_code == 1 and "Error: give one query vector, got 2 rows (shape (2, 48))" in res.output
    rel = run("delete", "-w", "_fingerprint=1", "-c", "p", ok=False)
    assert rel.exit_code == 1 and "Error: unknown filter field '_fingerprint'" in rel.output


_SLOW_INDEX = """
import sys, time
import numpy as np
import clipseek
from clipseek.encoders.base import Encoder
from clipseek.plugins import get_registry

LOG, DELAY = sys.argv[1], float(sys.argv[2])

class Slow(Encoder):
    name, model_id, dim, batch_size = "slow-test", "tests/slow", 3, 2
    def _embed_images(self, images):
        time.sleep(DELAY)
        vecs = np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) + 1 for im in images])
        with open(LOG, "a") as log:
            log.write(f"{len(images)}\\n")
        return vecs
    def _embed_texts(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)

class Plugin:
    @clipseek.hookimpl
    def register_encoders(self, register):
        register(Slow)

get_registry().register_plugin(Plugin(), name="slow-test")
from clipseek.cli.main import main
sys.argv = ["clipseek", *sys.argv[3:]]
main()
"""


def test_sigterm_commits_the_encoded_window_like_ctrl_c(tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    """A real `clipseek index` process gets SIGTERM mid-run: every item encoded before the signal
    is committed (the 256-item / 5 s window is not dropped), and a re-run completes it without
    duplicates."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import clipseek

    d = tmp_path / "many"
    for i in range(40):
        make_image(d / f"{i:02d}.png", (i * 6, 100, 200 - i * 5))
    log = tmp_path / "encoded.log"
    data = str(tmp_path / "data")
    args = [sys.executable, "-c", _SLOW_INDEX, str(log), "0.15", "--data-dir", data, "index", str(d), "-c", "s",
            "--model", "slow-test", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while (not log.exists() or len(log.read_text().split()) < 4) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log.exists(), err
    encoded = sum(int(n) for n in log.read_text().split())
    assert 8 <= encoded < 40
    with clipseek.Engine(data) as eng:
        assert eng.open("s", read_only=True).count() == encoded
    args[4] = "0"  # no delay for the re-run
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{40 - encoded} added, 0 updated, {encoded} unchanged, 0 failed" in done.stdout
    with clipseek.Engine(data) as eng:
        col = eng.open("s", read_only=True)
        ids = list(col.store.ids())
        assert col.count() == 40 and len(set(ids)) == 40
