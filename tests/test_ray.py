"""Ingest on Ray (``index --ray``) builds the same collection as the plain pipeline.

A local Ray cluster (2 CPUs) is started once for the module; its workers get this folder on their
path so they can register the test encoder (``_ray_colors``), which logs the size of every image
a worker encodes to the file the fixture yields."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from conftest import ColorEncoder
from PIL import Image

import clipseek
import clipseek.ray_ingest as ri
from clipseek.cli import cli

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The workers' encode log (one line per image a worker encoded: its size)."""
    path = os.pathsep.join([str(TESTS), *(p for p in sys.path if p)])
    log = tmp_path_factory.mktemp("ray") / "encoded.log"
    log.touch()
    env = {"PYTHONPATH": path, "CLIPSEEK_TEST_ENCODE_LOG": str(log)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield log
    ray.shutdown()


class EncodeLog:
    """What the Ray workers encoded since this object was made (sizes, e.g. ``"30x30"``)."""

    def __init__(self, log: Path) -> None:
        self.log, self.start = log, len(log.read_text().splitlines())

    def sizes(self) -> list[str]:
        return self.log.read_text().splitlines()[self.start :]


@pytest.fixture
def mixed_dir(tmp_path: Path, make_image) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "mixed"
    rng = np.random.default_rng(7)
    for i in range(40):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        make_image(d / f"sub{i % 3}" / f"img{i:02d}.{'jpg' if i % 2 else 'png'}", color, size=(64 + i, 48))
    make_image(d / "big.jpg", (10, 120, 200), size=(2000, 1500))  # reduced on decode
    (d / "empty.png").write_bytes(b"")
    (d / "not-image.jpg").write_bytes(b"this is text, not a JPEG")
    whole = (d / "sub0" / "img00.png").read_bytes()
    (d / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return d


def _records(col: clipseek.Collection) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    ids = sorted(col.store.ids())
    out = {}
    for rec in col.store.get(ids):
        assert rec is not None
        meta = {k: v for k, v in rec.metadata.items() if k != "indexed_at"}  # the time of each run
        out[rec.id] = (np.asarray(rec.vector), meta)
    return out


def _failures(rep: clipseek.IngestReport) -> list[tuple[str, str]]:
    return sorted((f.id, f.reason) for f in rep.failed)


def test_ray_builds_the_same_collection_and_resumes(ray_cluster, engine, mixed_dir: Path) -> None:  # type: ignore[no-untyped-def]
    plain = engine.collection("plain", model="test-colors")
    via_ray = engine.collection("viaray", model="test-colors")
    plain_rep = plain.index(mixed_dir)
    ray_rep = via_ray.index(mixed_dir, ray="", ray_plugins=["_ray_colors"])

    bad = {
        str((mixed_dir / "empty.png").resolve()): "empty_file",
        str((mixed_dir / "not-image.jpg").resolve()): "not_an_image",
        str((mixed_dir / "truncated.png").resolve()): "corrupt_image",
    }
    assert _failures(ray_rep) == sorted(bad.items()) == _failures(plain_rep)
    assert (ray_rep.added, ray_rep.updated, ray_rep.unchanged) == (41, 0, 0)

    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a)
    assert len(b) == 41 and str((mixed_dir / "big.jpg").resolve()) in b
    for rid in a:
        np.testing.assert_allclose(b[rid][0], a[rid][0], atol=1e-6)
        assert b[rid][1] == a[rid][1]
    assert b[str((mixed_dir / "big.jpg").resolve())][1]["width"] == 2000  # the file's size, not the reduced one

    # A re-run skips what is unchanged; a changed file is encoded again, as in a plain run. A
    # moved file (a new id) and a touched one (same bytes, new mtime) take their stored vectors:
    # the workers read and hash them but encode only the changed file.
    changed = mixed_dir / "sub1" / "img01.jpg"
    Image.new("RGB", (30, 30), (0, 255, 0)).save(changed)
    old, moved = mixed_dir / "sub2" / "img05.jpg", mixed_dir / "moved" / "img05.jpg"
    moved.parent.mkdir()
    old.rename(moved)
    touched = mixed_dir / "sub0" / "img03.jpg"
    os.utime(touched, ns=(1_000_000_000, 1_000_000_000))
    log = EncodeLog(ray_cluster)
    again = via_ray.index(mixed_dir, ray="", ray_plugins=["_ray_colors"])
    assert log.sizes() == ["30x30"]
    assert (again.added, again.updated, again.unchanged, again.reused) == (1, 2, 38, 2)
    assert _failures(again) == sorted(bad.items())
    plain_again = plain.index(mixed_dir)
    assert (plain_again.added, plain_again.updated, plain_again.reused) == (again.added, again.updated, again.reused)
    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a) and len(b) == 42  # the old path's record stays (no --prune)
    np.testing.assert_array_equal(b[str(moved.resolve())][0], b[str(old.resolve())][0])
    for p in (changed, moved, touched):
        rid = str(p.resolve())
        np.testing.assert_allclose(b[rid][0], a[rid][0], atol=1e-6)
        assert b[rid][1] == a[rid][1]


def test_cli_index_ray(ray_cluster, tmp_path: Path, mixed_dir: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(mixed_dir / "sub1" / "img04.png", mixed_dir / "sub1" / "zz-copy.png")
    home = str(tmp_path / "home")
    args = ["--data-dir", home, "index", str(mixed_dir), "-c", "r", "--model", "test-colors", "--json", "-q"]
    res = CliRunner().invoke(cli, [*args, "--ray", "--ray-plugin", "_ray_colors", "--dedup", "skip"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["count"] == 41
    src = out["sources"][0]
    assert (src["added"], src["unchanged"], src["duplicates"], src["failed_by_reason"]) == (
        41,
        0,
        1,
        {"empty_file": 1, "not_an_image": 1, "corrupt_image": 1},
    )
    with clipseek.Engine(home) as e:
        meta = e.collection("r").get(str((mixed_dir / "sub1" / "img04.png").resolve()))["metadata"]
    assert meta["duplicates"] == [str((mixed_dir / "sub1" / "zz-copy.png").resolve())]


@pytest.fixture
def copies_dir(mixed_dir: Path) -> Path:
    """mixed_dir with exact copies: two of sub0/img00.png, one of big.jpg, one of the empty file."""
    for src, dst in [
        ("sub0/img00.png", "sub0/zz-copy.png"),
        ("sub0/img00.png", "sub2/zz-copy.png"),
        ("big.jpg", "zz/big-copy.jpg"),
        ("empty.png", "zz/empty-copy.png"),
    ]:
        (mixed_dir / dst).parent.mkdir(exist_ok=True)
        shutil.copy(mixed_dir / src, mixed_dir / dst)
    return mixed_dir


def _counts(rep: clipseek.IngestReport) -> tuple[int, ...]:
    return (rep.added, rep.updated, rep.unchanged, rep.reused, rep.duplicates, rep.pruned)


def test_ray_dedup_skip_builds_the_plain_runs_collection(ray_cluster, engine, copies_dir: Path) -> None:  # type: ignore[no-untyped-def]
    d = copies_dir
    plain = engine.collection("plain", model="test-colors")
    via_ray = engine.collection("viaray", model="test-colors")
    log = EncodeLog(ray_cluster)
    ray_rep = via_ray.index(d, dedup="skip", ray="", ray_plugins=["_ray_colors"])
    plain_rep = plain.index(d, dedup="skip")
    # The workers cannot know the copies of this run's own items: they encode all 44 good files.
    assert len(log.sizes()) == 44
    assert _counts(ray_rep) == _counts(plain_rep) == (41, 0, 0, 0, 3, 0)
    assert _failures(ray_rep) == _failures(plain_rep) and len(ray_rep.failed) == 4

    def r(p: str) -> str:
        return str((d / p).resolve())

    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a) and len(b) == 41
    for rid in a:
        np.testing.assert_allclose(b[rid][0], a[rid][0], atol=1e-6)
        assert b[rid][1] == a[rid][1]
    assert b[r("sub0/img00.png")][1]["duplicates"] == [r("sub0/zz-copy.png"), r("sub2/zz-copy.png")]
    assert b[r("big.jpg")][1]["duplicates"] == [r("zz/big-copy.jpg")]
    assert sum("duplicates" in m for _, m in b.values()) == 2

    # A new copy of a stored image is added to its list; a moved file takes over its stored
    # vector. The workers read and hash both but encode nothing.
    shutil.copy(d / "sub0" / "img00.png", d / "zz" / "new-copy.png")
    (d / "sub1" / "img07.jpg").rename(d / "zz" / "img07.jpg")
    log = EncodeLog(ray_cluster)
    ray_rep = via_ray.index(d, dedup="skip", prune=True, ray="", ray_plugins=["_ray_colors"])
    plain_rep = plain.index(d, dedup="skip", prune=True)
    assert log.sizes() == []
    assert _counts(ray_rep) == _counts(plain_rep) == (1, 0, 40, 1, 4, 1)
    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a) and r("zz/img07.jpg") in b and r("sub1/img07.jpg") not in b
    for rid in a:
        np.testing.assert_allclose(b[rid][0], a[rid][0], atol=1e-6)
        assert b[rid][1] == a[rid][1]
    assert b[r("sub0/img00.png")][1]["duplicates"] == [r("sub0/zz-copy.png"), r("sub2/zz-copy.png"), r("zz/new-copy.png")]


def test_ray_encodes_on_the_driver_what_no_stored_record_holds(ray_cluster, engine, mixed_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Workers skip items whose hash prefix is stored; when no stored record has the full hash
    (here: every prefix planted, as if each item collided), the driver encodes the item itself."""
    planted = [hashlib.sha256(p.read_bytes()).hexdigest() for p in mixed_dir.rglob("*") if p.is_file()]
    real = ri.hash_prefixes
    monkeypatch.setattr(ri, "hash_prefixes", lambda hashes: real([*hashes, *planted]))
    here = []
    embed = ColorEncoder._embed_images
    monkeypatch.setattr(ColorEncoder, "_embed_images", lambda self, ims: here.extend(ims) or embed(self, ims))

    plain = engine.collection("plain", model="test-colors")
    via_ray = engine.collection("viaray", model="test-colors")
    log = EncodeLog(ray_cluster)
    ray_rep = via_ray.index(mixed_dir, ray="", ray_plugins=["_ray_colors"])
    assert log.sizes() == [] and len(here) == 41  # all on the driver
    plain_rep = plain.index(mixed_dir)
    assert _counts(ray_rep) == _counts(plain_rep) == (41, 0, 0, 0, 0, 0)
    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a)
    for rid in a:
        np.testing.assert_allclose(b[rid][0], a[rid][0], atol=1e-6)
        assert b[rid][1] == a[rid][1]


def test_ray_labels_like_the_plain_run(ray_cluster, engine, mixed_dir: Path) -> None:  # type: ignore[no-untyped-def]
    labels = ["red", "green", "blue", "yellow"]
    plain = engine.collection("plain", model="test-colors")
    via_ray = engine.collection("viaray", model="test-colors")
    plain.index(mixed_dir, labels=labels, label_top=2)
    via_ray.index(mixed_dir, labels=labels, label_top=2, ray="", ray_plugins=["_ray_colors"])
    a, b = _records(plain), _records(via_ray)
    assert sorted(b) == sorted(a) and len(a) == 41
    for rid in a:
        assert b[rid][1] == a[rid][1]
        assert len(b[rid][1]["labels"]) == 2 and set(b[rid][1]["labels"]) <= set(labels)
    # the solid blue-ish big.jpg is labelled blue first
    assert b[str((mixed_dir / "big.jpg").resolve())][1]["labels"][0] == "blue"
    # a re-run with other labels relabels every unchanged record from its stored vector, encoding none
    rep = via_ray.index(mixed_dir, labels=["red", "green"], ray="", ray_plugins=["_ray_colors"])
    plain.index(mixed_dir, labels=["red", "green"])
    assert (rep.added, rep.updated, rep.unchanged) == (0, 0, 41)
    a, b = _records(plain), _records(via_ray)
    assert {rid: m["labels"] for rid, (_, m) in b.items()} == {rid: m["labels"] for rid, (_, m) in a.items()}
    assert all(set(m["labels"]) <= {"red", "green"} for _, m in b.values())


def test_plain_index_and_queries_never_import_ray(tmp_path: Path, mixed_dir: Path) -> None:
    code = (
        "import sys, clipseek, _ray_colors\n"
        "from clipseek.plugins import get_registry\n"
        "import clipseek.cli.main\n"
        "get_registry().register_plugin(_ray_colors, name='colors')\n"
        f"with clipseek.Engine({str(tmp_path / 'data')!r}) as e:\n"
        "    c = e.collection('c', model='test-colors')\n"
        f"    c.index({str(mixed_dir)!r})\n"
        "    c.search('red', top=3)\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *(p for p in sys.path if p)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_interrupted_ray_run_keeps_its_records_and_resumes(ray_cluster, engine, mixed_dir: Path) -> None:  # type: ignore[no-untyped-def]
    col = engine.collection("c", model="test-colors")
    seen = []

    def stop_after_ten(n: int) -> None:
        seen.append(n)
        if sum(seen) >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        col.index(mixed_dir, ray="", ray_plugins=["_ray_colors"], on_progress=stop_after_ten)
    kept = col.count()
    assert 10 <= kept < 41  # what was received before the interruption is committed, not lost
    rep = col.index(mixed_dir, ray="", ray_plugins=["_ray_colors"])
    assert (rep.added, rep.unchanged, col.count()) == (41 - kept, kept, 41)
