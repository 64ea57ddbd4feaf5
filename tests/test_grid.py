"""The result grid shows each hit's own picture in its cell, in rank order.

The oracle is the pixels: the centre of each cell must have the colour of the image that hit
points at (the test images are solid colours), and a hit whose file is gone gets a blank cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLORS
from PIL import Image

from clipseek.cli import cli
from clipseek.grid import render_grid
from clipseek.types import Hit

# render_grid's layout: 8 px padding, 200 px thumbnails, 40 px of caption, a 34 px title band
PAD, THUMB, CAP, TITLE = 8, 200, 40, 34


def cell_centre(img: Image.Image, k: int, columns: int, title: bool) -> np.ndarray:
    """Mean RGB of a 24x24 square at the centre of tile k (the test images are 64x48)."""
    r, c = divmod(k, columns)
    x = PAD + c * (THUMB + PAD) + THUMB // 2
    y = (TITLE if title else 0) + PAD + r * (THUMB + CAP + PAD) + THUMB // 2
    a = np.asarray(img.convert("RGB"), dtype=np.float64)[y - 12 : y + 12, x - 12 : x + 12]
    return a.reshape(-1, 3).mean(axis=0)


def assert_colour(got: np.ndarray, want: tuple[int, int, int], tol: float = 20.0) -> None:
    assert np.abs(got - np.array(want, dtype=np.float64)).max() <= tol, (got.round(1).tolist(), want)


def assert_placeholder(got: np.ndarray) -> None:
    """A cell with no picture: white with grey '(image unavailable)' text, no colour at all."""
    assert got.min() >= 200 and got.max() - got.min() < 1, got.round(1).tolist()


def hit(path: Path | None, score: float = 0.7, cosine: float = 0.3) -> Hit:
    return Hit(str(path), cosine, {"path": str(path)} if path else {}, score)


def test_each_cell_shows_its_hits_image(tmp_path: Path, make_image) -> None:  # type: ignore[no-untyped-def]
    names = ["red", "green", "blue", "yellow", "black", "white", "red"]
    hits = [hit(make_image(tmp_path / f"{i}-{n}.png", COLORS[n])) for i, n in enumerate(names)]
    out = render_grid(hits, tmp_path / "g.png", title="colours", columns=3)
    img = Image.open(out)
    assert img.size == (3 * (THUMB + PAD) + PAD, TITLE + 3 * (THUMB + CAP + PAD) + PAD)
    for k, n in enumerate(names):
        assert_colour(cell_centre(img, k, 3, title=True), COLORS[n])
    # the two unused cells of the last row stay white
    for k in (7, 8):
        assert_colour(cell_centre(img, k, 3, title=True), (255, 255, 255), tol=0)


def test_missing_image_gets_a_blank_cell_and_the_query_comes_first(tmp_path: Path, make_image) -> None:  # type: ignore[no-untyped-def]
    blue = make_image(tmp_path / "blue.png", COLORS["blue"])
    gone = make_image(tmp_path / "gone.png", COLORS["green"])
    gone.unlink()
    query = Image.new("RGB", (64, 48), COLORS["yellow"])
    hits = [hit(gone), hit(blue), hit(None)]
    img = Image.open(render_grid(hits, tmp_path / "g.png", query_image=query, columns=2))
    assert img.size == (2 * (THUMB + PAD) + PAD, 2 * (THUMB + CAP + PAD) + PAD)
    assert_colour(cell_centre(img, 0, 2, title=False), COLORS["yellow"])
    assert_placeholder(cell_centre(img, 1, 2, title=False))  # the missing file
    assert_colour(cell_centre(img, 2, 2, title=False), COLORS["blue"])
    assert_placeholder(cell_centre(img, 3, 2, title=False))  # no path at all


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    data = str(tmp_path / "data")

    def invoke(*args: str) -> str:
        res = runner.invoke(cli, ["--data-dir", data, *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    return invoke


def test_cli_grid_shows_the_hits_in_rank_order(run, photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run("index", str(photo_dir), "-c", "p", "--model", "test-colors", "-q")
    ranked = [Path(h["id"]).stem for h in json.loads(run("search", "blue", "-c", "p", "--json", "-n", "4"))["hits"]]
    assert ranked[0] == "blue" and len(ranked) == 4
    out = tmp_path / "g.png"
    assert f"grid written to {out}" in run("search", "blue", "-c", "p", "--grid", str(out), "-n", "4")
    img = Image.open(out)
    assert img.size == (4 * (THUMB + PAD) + PAD, TITLE + THUMB + CAP + 2 * PAD)
    for k, stem in enumerate(ranked):
        assert_colour(cell_centre(img, k, 5, title=True), COLORS[stem])
