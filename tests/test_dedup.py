"""Exact duplicates at ingest (``--dedup keep|skip``) and near-duplicate groups (``clipseek dedup``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLORS
from PIL import Image

from clipseek.cli import cli
from clipseek.dedup import near_duplicates
from clipseek.stores.local import LocalStore
from clipseek.stores.memory import MemoryStore
from clipseek.types import Record

# ----------------------------------------------------------------------------- exact, at ingest


@pytest.fixture
def copies(tmp_path: Path, make_image) -> Path:  # type: ignore[no-untyped-def]
    """a.png, two byte-identical copies of it (b.png, sub/c.png) and one other image."""
    d = tmp_path / "dups"
    make_image(d / "a.png", COLORS["red"])
    make_image(d / "d.png", COLORS["blue"])
    shutil.copy(d / "a.png", d / "b.png")
    (d / "sub").mkdir()
    shutil.copy(d / "a.png", d / "sub" / "c.png")
    return d


def encoded_images(col, monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    n = [0]
    real = col.encoder.embed_prepared

    def counting(images, **kw):  # type: ignore[no-untyped-def]
        n[0] += len(images)
        return real(images, **kw)

    monkeypatch.setattr(col.encoder, "embed_prepared", counting)
    return n


def test_dedup_keep_indexes_every_copy_and_encodes_the_bytes_once(engine, copies, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("keep", model="test-colors", store="local")
    n = encoded_images(col, monkeypatch)
    rep = col.index(copies)
    assert (rep.added, rep.reused, rep.duplicates, n[0]) == (4, 2, 0, 2)
    a, b, c = (col.store.get([str(copies / p)])[0] for p in ("a.png", "b.png", "sub/c.png"))
    assert np.array_equal(a.vector, b.vector) and np.array_equal(a.vector, c.vector)
    assert "duplicates" not in a.metadata


def test_dedup_skip_indexes_one_record_listing_the_other_paths(engine, copies, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("skip", model="test-colors", store="local")
    n = encoded_images(col, monkeypatch)
    rep = col.index(copies, dedup="skip")
    assert (rep.added, rep.duplicates, n[0]) == (2, 2, 2)
    assert sorted(col.store.ids()) == sorted([str(copies / "a.png"), str(copies / "d.png")])
    listed = [str(copies / "b.png"), str(copies / "sub" / "c.png")]
    assert col.get(str(copies / "a.png"))["metadata"]["duplicates"] == listed
    assert col.count(where="duplicates=" + listed[1]) == 1  # users can filter on it
    # A re-run finds the same duplicates again and lists them once.
    rep = col.index(copies, dedup="skip")
    assert (rep.added, rep.updated, rep.unchanged, rep.duplicates, n[0]) == (0, 0, 2, 2, 2)
    assert col.get(str(copies / "a.png"))["metadata"]["duplicates"] == listed
    # A new copy found later is added to the stored record's list.
    shutil.copy(copies / "a.png", copies / "e.png")
    rep = col.index(copies, dedup="skip")
    assert (rep.added, rep.duplicates, n[0]) == (0, 3, 2)
    assert col.get(str(copies / "a.png"))["metadata"]["duplicates"] == sorted([*listed, str(copies / "e.png")])


def test_dedup_skip_when_the_kept_file_is_gone_a_copy_takes_over(engine, copies, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    col = engine.create("gone", model="test-colors", store="local")
    col.index(copies, dedup="skip")
    vec = col.store.get([str(copies / "a.png")])[0].vector
    (copies / "a.png").unlink()
    n = encoded_images(col, monkeypatch)
    rep = col.index(copies, dedup="skip", prune=True)
    assert (rep.added, rep.reused, rep.duplicates, rep.pruned, n[0]) == (1, 1, 1, 1, 0)
    assert sorted(col.store.ids()) == sorted([str(copies / "b.png"), str(copies / "d.png")])
    b = col.store.get([str(copies / "b.png")])[0]
    assert np.array_equal(b.vector, vec) and b.metadata["duplicates"] == [str(copies / "sub" / "c.png")]


def test_cli_index_dedup_and_prune_options(tmp_path, copies) -> None:  # type: ignore[no-untyped-def]
    data = str(tmp_path / "data")
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", data, "index", str(copies), "-c", "x", "--model", "test-colors", "-q",
                              "--dedup", "skip", "--json"])
    assert res.exit_code == 0, res.output
    src = json.loads(res.output)["sources"][0]
    assert (src["added"], src["duplicates"], src["pruned"], json.loads(res.output)["count"]) == (2, 2, 0, 2)
    res = runner.invoke(cli, ["--data-dir", data, "index", str(copies / "d.png"), "-c", "x", "--prune"])
    assert res.exit_code == 1
    assert f"Error: {copies / 'd.png'}: --prune removes records of files gone from a folder; give a folder" in res.output


# ----------------------------------------------------------------------------- near duplicates


def _oracle_groups(ids: list[str], vecs: np.ndarray, threshold: float) -> set[frozenset[str]]:
    """Connected components of the graph 'cosine >= threshold', by brute force."""
    sims = vecs @ vecs.T
    seen: set[int] = set()
    groups = set()
    for i in range(len(ids)):
        if i in seen:
            continue
        comp, todo = {i}, [i]
        while todo:
            j = todo.pop()
            for k in np.nonzero(sims[j] >= threshold)[0].tolist():
                if k not in comp:
                    comp.add(k)
                    todo.append(k)
        seen |= comp
        if len(comp) > 1:
            groups.add(frozenset(ids[k] for k in comp))
    return groups


def _planted(n: int, dim: int = 32, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = []
    while len(vecs) < n:
        base = rng.standard_normal(dim)
        for _ in range(int(rng.integers(1, 5))):
            vecs.append(base + rng.standard_normal(dim) * 0.05)
    x = np.asarray(vecs[:n], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [f"r{i:04d}" for i in range(n)], x


@pytest.mark.parametrize("kind", ["memory", "local-exact", "local-hnsw"])
def test_near_duplicate_groups_equal_the_brute_force_components(kind, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ids, x = _planted(400)
    st = (
        MemoryStore(None, 32)
        if kind == "memory"
        else LocalStore(tmp_path / "s", 32, exact_below=0 if kind == "local-hnsw" else 20_000)
    )
    st.upsert([Record(i, v, {"path": f"/p/{i}.jpg"}) for i, v in zip(ids, x)])
    expected = _oracle_groups(ids, x, 0.99)
    assert len(expected) > 50
    groups = near_duplicates(st, 0.99)
    assert {frozenset(m.id for m in g.members) for g in groups} == expected
    sizes = [len(g.members) for g in groups]
    assert sizes == sorted(sizes, reverse=True)
    g = groups[0]
    first = x[ids.index(g.members[0].id)]
    assert g.members[0].id == min(m.id for m in g.members)
    for m in g.members:
        assert m.cosine == pytest.approx(float(first @ x[ids.index(m.id)]), abs=1e-5)
        assert m.path == f"/p/{m.id}.jpg"


def test_many_identical_copies_form_one_group_with_few_neighbours() -> None:
    st = MemoryStore(None, 8)
    v = np.eye(8, dtype=np.float32)
    st.upsert([Record(f"c{i:02d}", v[0]) for i in range(25)] + [Record("other", v[1])])
    groups = near_duplicates(st, 0.999, neighbours=2)
    assert [[m.id for m in g.members] for g in groups] == [[f"c{i:02d}" for i in range(25)]]


@pytest.fixture
def near(tmp_path: Path, make_image) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    d = tmp_path / "near"
    make_image(d / "red1.png", (220, 30, 30))
    make_image(d / "red2.png", (222, 31, 29))
    make_image(d / "red3.jpg", (219, 30, 32))
    make_image(d / "green1.png", (30, 200, 40))
    make_image(d / "green2.png", (31, 201, 40))
    make_image(d / "blue.png", (30, 40, 220))
    make_image(d / "yellow.png", (230, 220, 30))
    data = str(tmp_path / "data")
    res = CliRunner().invoke(cli, ["--data-dir", data, "index", str(d), "-c", "n", "--model", "test-colors", "-q"])
    assert res.exit_code == 0, res.output
    return data, d


def test_cli_dedup_json_table_and_grid(near, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, d = near
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", data, "dedup", "-c", "n", "--threshold", "0.995", "--json", "-q"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["records"], out["threshold"]) == (7, 0.995)
    got = [[m["id"] for m in g["members"]] for g in out["groups"]]
    assert got == [[str(d / "red1.png"), str(d / "red2.png"), str(d / "red3.jpg")],
                   [str(d / "green1.png"), str(d / "green2.png")]]
    assert [g["size"] for g in out["groups"]] == [3, 2]
    assert out["groups"][0]["members"][0]["cosine"] == 1.0 and out["groups"][0]["members"][0]["path"] == got[0][0]

    res = runner.invoke(cli, ["--data-dir", data, "dedup", "-c", "n", "--threshold", "0.995", "-q",
                              "--grid", str(tmp_path / "grids")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "2 groups of near duplicates (cosine >= 0.995): 5 of 7 records"
    assert lines[1] == "group 1 (3):" and lines[2] == f"  1.0000  {d / 'red1.png'}"
    assert lines[-1] == f"2 grids written to {tmp_path / 'grids'}"
    pics = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert pics == ["group-0001.png", "group-0002.png"]
    with Image.open(tmp_path / "grids" / "group-0001.png") as im:
        assert im.width > 3 * 200  # three tiles side by side

    res = runner.invoke(cli, ["--data-dir", data, "dedup", "-c", "n", "--threshold", "1.5"])
    assert res.exit_code == 2 and "1.5 is not in the range -1<=x<=1" in res.output
    res = runner.invoke(cli, ["--data-dir", data, "dedup", "-c", "nope"])
    assert res.exit_code == 1 and "Error: no collection 'nope'" in res.output
