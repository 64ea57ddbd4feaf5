"""Damaged and busy collections through the Engine and the CLI: `delete --all` against a running
writer, `info` with a broken collection, `check` and `repair`, and a long-lived reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipseek
from clipseek.cli import cli
from clipseek.errors import CollectionDamaged


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")

    def invoke(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        res = runner.invoke(cli, ["--data-dir", data, *args], catch_exceptions=False)
        assert res.exit_code == code, res.output
        return res

    return invoke


@pytest.fixture
def indexed(run, photo_dir):  # type: ignore[no-untyped-def]
    run("index", str(photo_dir), "-c", "p", "--model", "test-colors", "-q")
    run("index", str(photo_dir / "sub"), "-c", "q", "--model", "test-colors", "-q")
    return photo_dir


def _store(tmp_path: Path, name: str = "p") -> Path:
    return tmp_path / "data" / "collections" / name / "store"


HOLDER = textwrap.dedent(
    """
    import sys, time
    import clipseek
    eng = clipseek.Engine(sys.argv[1])
    eng.open(sys.argv[2])  # open for writing, as a running `clipseek index` holds it
    print("ready", flush=True)
    sys.stdin.readline()
    eng.close()
    """
)


def test_delete_all_is_refused_while_another_process_writes(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "data"), "p"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        res = run("delete", "--all", "-y", "-c", "p", code=1)
        assert res.output.startswith("Error: cannot delete collection 'p': the store at ")
        assert "is open for writing (an `index` run?); wait for it to finish, then try again" in res.output
        assert (_store(tmp_path) / "store.sqlite").is_file()
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert json.loads(run("info", "p", "--json").output)["count"] == 5  # untouched
    assert run("delete", "--all", "-y", "-c", "p").output.strip() == "collection 'p' deleted"
    assert json.loads(run("info", "--json").output)[0]["name"] == "q"


def test_info_lists_the_others_when_one_is_broken(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "data" / "collections" / "p" / "collection.json"
    cfg.write_text("{not json")
    out = run("info").output.splitlines()
    assert out[0].startswith(f"p: DAMAGED: {cfg}: not a valid collection file (JSONDecodeError: ")
    assert out[0].endswith("(see `clipseek check -c p`)")
    assert out[1].startswith("q: 2 images, model test-colors")
    infos = json.loads(run("info", "--json").output)
    assert [i["name"] for i in infos] == ["p", "q"] and "error" in infos[0] and infos[1]["count"] == 2
    res = run("search", "red", "-c", "p", code=1)
    assert res.output.startswith(f"Error: {cfg}: not a valid collection file") and "delete --all -c p" in res.output
    run("delete", "--all", "-y", "-c", "p")  # a damaged collection can still be deleted
    assert [i["name"] for i in json.loads(run("info", "--json").output)] == ["q"]


def test_zero_byte_database_stops_index(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = _store(tmp_path) / "store.sqlite"
    db.write_bytes(b"")
    for cmd in (("index", str(indexed), "-c", "p", "-q"), ("search", "red", "-c", "p")):
        res = run(*cmd, code=1)
        assert res.output.startswith(f"Error: {db} is empty or missing but vectors.f32 holds vectors")
    assert db.stat().st_size == 0  # no fresh store was started over the old vectors
    rep = json.loads(run("check", "-c", "p", "--json", code=1).output)
    assert rep["ok"] is False and str(db) in rep["problems"][0]["problem"]


def test_check_and_repair_damaged_vectors(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert run("check", "-c", "p").output.strip() == "collection 'p' (5 records): OK"
    assert json.loads(run("check", "-c", "p", "--json").output) == {
        "name": "p",
        "ok": True,
        "records": 5,
        "problems": [],
    }
    store = _store(tmp_path)
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.open("p", read_only=True)
        victim = col.store.ids()[0]
        slot = col.store._lookup(col.store._reader(), [victim])[0][1]
    with open(store / "vectors.f32", "r+b") as fh:
        fh.seek(slot * 48 * 4)
        fh.write(os.urandom(48 * 4))
    res = run("check", "-c", "p", code=1)
    assert res.output.splitlines()[:3] == [
        "collection 'p' (5 records): DAMAGED",
        f"  {store / 'vectors.f32'}: 1 records have damaged vectors; fix: `clipseek repair` sets them aside; then re-index them",
        f"    {victim}",
    ]
    rep = json.loads(run("repair", "-c", "p", "--json").output)
    assert rep == {
        "name": "p",
        "records": 4,
        "rebuilt": ["filter atoms and field counts", "ANN index"],
        "set_aside": [victim],
    }
    rep = json.loads(run("check", "-c", "p", "--json", code=1).output)
    assert rep["problems"][0]["ids"] == [victim] and "await re-indexing" in rep["problems"][0]["problem"]
    hits = json.loads(run("search", "red", "-c", "p", "--json", "-n", "10").output)["hits"]
    assert len(hits) == 4 and all(abs(h["cosine"]) <= 1.0001 for h in hits)
    # re-indexing the folder encodes the set-aside record again: nothing is lost
    assert "1 added" in run("index", str(indexed), "-c", "p", "-q").output
    assert json.loads(run("check", "-c", "p", "--json").output)["ok"] is True


def test_long_lived_collection_reader_sees_later_writes(tmp_path, photo_dir, make_image) -> None:  # type: ignore[no-untyped-def]
    with clipseek.Engine(tmp_path / "data") as eng:
        eng.create("p", model="test-colors").index(photo_dir)
    with clipseek.Engine(tmp_path / "data") as reader_eng, clipseek.Engine(tmp_path / "data") as writer_eng:
        reader = reader_eng.open("p", read_only=True)
        assert reader.count() == 5
        writer = writer_eng.open("p")
        extra = photo_dir.parent / "more"
        for i in range(3):
            make_image(extra / f"red{i}.png", (220, 30 + i, 30))
        writer.index(extra)
        red2 = str((extra / "red2.png").resolve())
        assert reader.count() == 8
        assert reader.get(red2)["metadata"]["file_name"] == "red2.png"
        res = reader.search(like=red2, top=2)
        assert len(res.hits) == 2 and red2 not in [h.id for h in res.hits]
        assert {Path(h.id).name for h in res.hits} <= {"red0.png", "red1.png", "red.jpg"}


def test_store_folder_that_is_a_file(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    store = _store(tmp_path)
    shutil.rmtree(store)
    store.write_text("")
    res = run("search", "red", "-c", "p", code=1)
    assert res.output.strip() == f"Error: {store} should be the store's folder but is a file; move it away"
    with clipseek.Engine(tmp_path / "data") as eng, pytest.raises(CollectionDamaged):
        eng.open("p")


def test_collection_of_an_uninstalled_store_can_be_deleted(run, indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "data" / "collections" / "p" / "collection.json"
    cfg.write_text(cfg.read_text().replace('"store": "local"', '"store": "gone"'))
    assert "DAMAGED" not in run("info").output.splitlines()[1]  # q is fine
    assert "gone" in run("info").output.splitlines()[0]
    assert run("delete", "--all", "-y", "-c", "p").output.strip() == "collection 'p' deleted"
    assert not cfg.parent.exists()
