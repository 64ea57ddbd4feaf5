"""Exactly once: stable ids, content hashes, moved files, --prune, and a real `clipseek index`
killed with SIGKILL at random points then run again.

The kill test is written per source kind (``SOURCES``): each entry builds a source on disk and says
which ids its good items must end up as, and which extra CLI options it needs: a folder (ids are
paths), a CSV manifest with an id column (ids are its values) and a URL list served by a threaded HTTP
server on 127.0.0.1 that the test starts and stops (ids are the URLs; ``--allow-private-urls``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import COLORS
from PIL import Image

import clipseek
from clipseek.errors import ClipseekError

# ----------------------------------------------------------------------------- in process


class Counting:
    """Counts the images an encoder is asked to embed."""

    def __init__(self, col: clipseek.Collection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        enc = col.encoder
        real = enc.embed_prepared

        def counting(images, **kw):  # type: ignore[no-untyped-def]
            self.n += len(images)
            return real(images, **kw)

        monkeypatch.setattr(enc, "embed_prepared", counting)


@pytest.fixture
def three(tmp_path: Path, make_image) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "pics"
    make_image(d / "a.png", COLORS["red"])
    make_image(d / "b.png", COLORS["green"])
    make_image(d / "sub" / "c.png", COLORS["blue"])
    return d


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_content_hash_is_stored_hidden_and_costs_no_read_on_a_rerun(engine, three, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("h", model="test-colors", store="local")
    rep = col.index(three)
    assert (rep.added, rep.reused) == (3, 0)
    a = str(three / "a.png")
    assert col.store.get([a])[0].metadata["_sha256"] == sha(three / "a.png")
    assert "_sha256" not in col.get(a)["metadata"] and "_sha256" not in col.fields()
    with pytest.raises(ClipseekError, match="_sha256"):
        col.count(where={"_sha256": sha(three / "a.png")})

    import clipseek.images
    import clipseek.ingest

    opened: list[str] = []
    monkeypatch.setattr(clipseek.ingest, "_read_small", lambda p: opened.append(str(p)))
    monkeypatch.setattr(clipseek.ingest, "_hash_file", lambda p: opened.append(str(p)))
    monkeypatch.setattr(clipseek.images, "load_image", lambda *a, **k: opened.append("decode"))
    rep = col.index(three)
    assert (rep.added, rep.updated, rep.unchanged, opened) == (0, 0, 3, [])


def test_moved_file_reuses_its_vector_and_prune_removes_the_old_record(engine, three, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("mv", model="test-colors", store="local")
    col.index(three)
    old, new = three / "a.png", three / "sub" / "renamed.png"
    stored = col.store.get([str(old)])[0].vector
    os.rename(old, new)
    enc = Counting(col, monkeypatch)
    rep = col.index(three)
    # Without --prune the old record stays (its file may come back); the new id has the same vector.
    assert (rep.added, rep.updated, rep.unchanged, rep.reused, enc.n) == (1, 0, 2, 1, 0)
    assert np.array_equal(col.store.get([str(new)])[0].vector, stored)
    assert col.store.get([str(new)])[0].metadata["path"] == str(new)
    assert sorted(col.store.ids()) == sorted([str(old), str(new), str(three / "b.png"), str(three / "sub" / "c.png")])
    rep = col.index(three, prune=True)
    assert (rep.added, rep.unchanged, rep.pruned, enc.n) == (0, 3, 1, 0)
    assert sorted(col.store.ids()) == sorted([str(new), str(three / "b.png"), str(three / "sub" / "c.png")])
    assert col.check()["ok"]


def test_changed_file_is_reencoded_and_touched_file_reuses_its_vector(engine, three, make_image, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("ch", model="test-colors", store="local")
    col.index(three)
    a, b = three / "a.png", three / "b.png"
    before = {i: col.store.get([i])[0].vector for i in (str(a), str(b))}
    make_image(a, COLORS["yellow"])  # new bytes
    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    enc = Counting(col, monkeypatch)
    rep = col.index(three)
    assert (rep.added, rep.updated, rep.unchanged, rep.reused, enc.n) == (0, 2, 1, 1, 1)
    assert np.array_equal(col.store.get([str(b)])[0].vector, before[str(b)])
    yellow = col.encoder.embed_images([Image.open(a).convert("RGB")])[0]
    assert np.allclose(col.store.get([str(a)])[0].vector, yellow, atol=1e-6)
    assert col.store.get([str(a)])[0].metadata["_sha256"] == sha(a)


def test_a_changed_file_does_not_lend_its_old_vector(engine, three, make_image, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """a.png is rewritten with other bytes; a new file with a.png's *old* bytes must be encoded,
    not given a.png's (now different) vector."""
    col = engine.create("stale", model="test-colors", store="local")
    col.index(three)
    a = three / "a.png"
    keep = three.parent / "a-old.png"
    shutil.copy2(a, keep)
    make_image(a, COLORS["yellow"])
    col.index(three)
    shutil.copy2(keep, three / "z.png")
    enc = Counting(col, monkeypatch)
    rep = col.index(three)
    assert (rep.added, rep.reused, enc.n) == (1, 0, 1)
    assert not np.allclose(col.store.get([str(three / "z.png")])[0].vector, col.store.get([str(a)])[0].vector)


def test_prune_only_touches_the_folders_being_indexed(engine, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    x, y = tmp_path / "x", tmp_path / "x-other"  # a shared name prefix is not "inside"
    make_image(x / "1.png", COLORS["red"])
    make_image(y / "2.png", COLORS["green"])
    make_image(y / "3.png", COLORS["blue"])
    col = engine.create("pr", model="test-colors", store="local")
    col.index(x)
    col.index(y)
    (y / "2.png").unlink()
    assert col.index(x, prune=True).pruned == 0
    assert col.count() == 3
    assert col.index(y, prune=True).pruned == 1
    assert sorted(col.store.ids()) == sorted([str(x / "1.png"), str(y / "3.png")])
    with pytest.raises(ClipseekError, match=r"3.png: --prune removes records of files gone from a folder; give a folder"):
        col.index(y / "3.png", prune=True)


# ----------------------------------------------------------------------------- kill -9

# `python -c` wrapper: registers the test encoder (tests/conftest.py registers it in process only),
# slows each batch down a little and logs how many images it encoded, then runs the real CLI.
_INDEX = """
import sys, time
import numpy as np
import clipseek
from clipseek.encoders.base import Encoder
from clipseek.plugins import get_registry

LOG, DELAY = sys.argv[1], float(sys.argv[2])

class Colors(Encoder):
    name, model_id, dim, version, batch_size = "kill-test", "tests/kill", 48, "1", 4
    def _embed_images(self, images):
        time.sleep(DELAY)
        out = np.stack([np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32).reshape(-1) / 255 + 0.05
                        for im in images])
        with open(LOG, "a") as log:
            log.write(f"{len(images)}\\n")
        return out
    def _embed_texts(self, texts):
        return np.ones((len(texts), 48), dtype=np.float32)

class Plugin:
    @clipseek.hookimpl
    def register_encoders(self, register):
        register(Colors)

get_registry().register_plugin(Plugin(), name="kill-test")
# Commit every 8 items (not 256) so that kills land between and during many commits.
from clipseek.ingest import IngestJob
IngestJob.__init__.__kwdefaults__["commit_every"] = 8
from clipseek.cli.main import main
sys.argv = ["clipseek", *sys.argv[3:]]
main()
"""

#: (CLI target, ids of the good items, extra CLI options)
Built = tuple[str, set[str], list[str]]
Builder = Callable[[Path, Callable[..., Path], ExitStack], Built]


def _images(d: Path, make_image: Callable[..., Path], n: int) -> tuple[list[Path], list[Path]]:
    """``n`` small images in nested folders, and two corrupt files (never indexed)."""
    good = [make_image(d / f"g{i % 5}" / f"{i:03d}.png", ((i * 37) % 256, (i * 11) % 256, (i * 5) % 256), size=(24, 16))
            for i in range(n)]
    (d / "bad1.jpg").write_bytes(b"not a jpeg")
    (d / "g0" / "bad2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return good, [d / "bad1.jpg", d / "g0" / "bad2.png"]


def folder_source(tmp: Path, make_image: Callable[..., Path], stack: ExitStack) -> Built:
    """150 images; ids are paths."""
    good, _ = _images(tmp / "folder", make_image, 150)
    return str(tmp / "folder"), {str(p.resolve()) for p in good}, []


def manifest_source(tmp: Path, make_image: Callable[..., Path], stack: ExitStack) -> Built:
    """A CSV of 100 images and the two corrupt files, paths relative to it; ids from its id column."""
    good, bad = _images(tmp / "m", make_image, 100)
    lines = ["id,image,caption"]
    lines += [f"item-{i},{p.relative_to(tmp / 'm')},picture {i}" for i, p in enumerate(good + bad)]
    (tmp / "m" / "list.csv").write_text("\n".join(lines) + "\n")
    return str(tmp / "m" / "list.csv"), {f"item-{i}" for i in range(len(good))}, []


def url_source(tmp: Path, make_image: Callable[..., Path], stack: ExitStack) -> Built:
    """A URL list of 100 images and the two corrupt files, served from 127.0.0.1; ids are the URLs."""
    good, bad = _images(tmp / "www", make_image, 100)
    handler = functools.partial(_QuietHandler, directory=str(tmp / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    urls = [base + p.relative_to(tmp / "www").as_posix() for p in good + bad]
    (tmp / "urls.txt").write_text("\n".join(urls) + "\n")
    return str(tmp / "urls.txt"), set(urls[: len(good)]), ["--allow-private-urls"]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


SOURCES: dict[str, Builder] = {"folder": folder_source, "manifest": manifest_source, "url": url_source}


def _records(data: str, name: str) -> tuple[list[str], dict[str, object]]:
    with clipseek.Engine(data) as eng:
        col = eng.open(name, read_only=True)
        return list(col.store.ids()), col.check()


def _encoded(log: Path) -> int:
    return sum(int(n) for n in log.read_text().split()) if log.exists() else 0


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_kill_9_at_random_points_then_rerun_gives_every_good_item_once(kind, tmp_path, make_image) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        _kill_and_rerun(*SOURCES[kind](tmp_path, make_image, stack), tmp_path)


def _kill_and_rerun(target: str, good: set[str], extra: list[str], tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    rng = random.Random(7)

    def args(log: Path, delay: float) -> list[str]:
        return [sys.executable, "-c", _INDEX, str(log), str(delay), "--data-dir", data, "index", target, "-c", "k",
                "--model", "kill-test", "-q", "--json", *extra]

    # Each run is SIGKILLed after it has encoded a random number of the items still to do, plus a
    # random few milliseconds (so kills land before, during and after commits); each restart
    # resumes from what the last one committed.
    kills, stored = 0, 0
    for run in range(4):
        log = tmp_path / f"run{run}.log"
        todo = len(good) - stored
        after = rng.randrange(1, max(2, todo // 2))
        proc = subprocess.Popen(args(log, 0.02), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while _encoded(log) < after and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            assert proc.poll() is None, "the run finished before the kill"
            proc.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            proc.kill()
            proc.wait(timeout=30)
        ids, check = _records(data, "k")
        assert check["ok"], check  # nothing partial or damaged after the kill
        assert len(ids) == len(set(ids)) and set(ids) <= good
        stored = len(ids)
    assert kills == 4 and 0 < stored < len(good)
    done = subprocess.run(args(tmp_path / "last.log", 0), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids, check = _records(data, "k")
    assert check["ok"], check
    assert sorted(ids) == sorted(good)  # every good item, each exactly once, no bad one
    rep = json.loads(done.stdout)["sources"][0]
    assert (rep["added"] + rep["unchanged"], len(rep["failed"])) == (len(good), 2)
    assert _encoded(tmp_path / "last.log") == len(good) - stored  # nothing committed is encoded again
