"""Shared fixtures.

``ColorEncoder`` is a tiny, deterministic, honest encoder for tests of plumbing (CLI, API, ingest,
errors): an image becomes its 4x4 colour layout, a colour word becomes a solid image of that colour.
It is registered through the real plugin hook, as a third-party encoder would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

import clipseek
from clipseek.encoders.base import Calibration, Encoder
from clipseek.plugins import get_registry

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
    "红色": (220, 30, 30),
    "绿色": (30, 200, 40),
    "蓝色": (30, 40, 220),
}


class ColorEncoder(Encoder):
    """Test encoder: 4x4 colour layout of an image; colour words as solid colours."""

    name = "test-colors"
    model_id = "tests/colors-4x4"
    dim = 48
    version = "1"
    batch_size = 4
    calibration = {"text": Calibration(0.9, 0.05), "image": Calibration(0.95, 0.02)}

    def _embed_images(self, images):  # type: ignore[no-untyped-def]
        out = []
        for im in images:
            a = np.asarray(im.convert("RGB").resize((4, 4), Image.BILINEAR), dtype=np.float32) / 255.0
            out.append(a.reshape(-1) + 0.05)
        return np.stack(out)

    def _embed_texts(self, texts):  # type: ignore[no-untyped-def]
        out = []
        for t in texts:
            rgb = next((c for w, c in COLORS.items() if w in t.lower()), (128, 128, 128))
            out.append(self._embed_images([Image.new("RGB", (8, 8), rgb)])[0])
        return np.stack(out)


class _TestPlugin:
    @clipseek.hookimpl
    def register_encoders(self, register):  # type: ignore[no-untyped-def]
        register(ColorEncoder)


@pytest.fixture(scope="session", autouse=True)
def test_plugin() -> Iterator[None]:
    plugin = _TestPlugin()
    get_registry().register_plugin(plugin, name="tests.colors")
    yield
    get_registry().unregister_plugin(plugin)


@pytest.fixture
def make_image() -> Callable[..., Path]:
    def make(path: Path, color: tuple[int, int, int] = (200, 30, 30), size=(64, 48), fmt: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", size, color)
        # a little structure so crops differ from solid colours
        for x in range(0, size[0], 8):
            for y in range(0, size[1], 8):
                img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
        img.save(path, format=fmt)
        return path

    return make


@pytest.fixture
def photo_dir(tmp_path: Path, make_image) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "photos"
    make_image(d / "red.jpg", COLORS["red"])
    make_image(d / "green.png", COLORS["green"])
    make_image(d / "blue.webp", COLORS["blue"])
    make_image(d / "sub" / "yellow.bmp", COLORS["yellow"])
    make_image(d / "sub" / "white.gif", COLORS["white"])
    make_image(d / ".hidden" / "black.png", COLORS["black"])
    make_image(d / ".dot.png", COLORS["black"])
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[clipseek.Engine]:
    with clipseek.Engine(tmp_path / "data") as eng:
        yield eng
