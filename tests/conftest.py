"""Shared fixtures.

``ColorEncoder`` is a tiny, deterministic, honest encoder for tests of plumbing (CLI, API, ingest,
errors): an image becomes its 4x4 colour layout, a colour word becomes a solid image of that colour.
It is registered through the real plugin hook, as a third-party encoder would be.
"""

from __future__ import annotations

import os
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


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "CLIPSEEK_PROXY")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Downloads honour http_proxy/https_proxy/all_proxy (and CLIPSEEK_PROXY): a machine that sets
    them must not send the tests' loopback downloads to its proxy, nor hand them to the servers the
    session-scoped fixtures start before any test runs. Tests of proxies set their own."""
    for name in PROXY_VARIABLES:
        os.environ.pop(name, None)
        os.environ.pop(name.upper(), None)


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


# ------------------------------------------------------------------------------------- Milvus
#
# Tests marked `milvus` (and the contract suite's milvus-store cases, marked here) need a Milvus
# server at $CLIPSEEK_TEST_MILVUS_URI. `.ci/run` starts one (`tests/_milvus_server.py`) and sets
# CLIPSEEK_REQUIRE_MILVUS=1, which turns a missing server into a failure instead of a skip.

MILVUS_HOWTO = (
    "start one with `python tests/_milvus_server.py start --data /tmp/milvus-test` "
    "(pip install 'clipseek[milvus,test]') and set CLIPSEEK_TEST_MILVUS_URI=http://127.0.0.1:19530"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The contract suite runs over every registered store: its milvus cases need the server."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "milvus" in (params.get("store_cls"), params.get("name")):
            item.add_marker(pytest.mark.milvus)


@pytest.fixture(scope="session")
def milvus_uri() -> str:
    """The test server's URI; skips (fails under CLIPSEEK_REQUIRE_MILVUS=1) when there is none."""
    import os

    uri = os.environ.get("CLIPSEEK_TEST_MILVUS_URI", "")
    why = None
    if not uri:
        why = f"needs a Milvus server: CLIPSEEK_TEST_MILVUS_URI is not set; {MILVUS_HOWTO}"
    else:
        try:
            from pymilvus import connections, utility

            connections.connect("clipseek-tests-probe", uri=uri, timeout=10)
            utility.get_server_version(using="clipseek-tests-probe", timeout=10)
            connections.disconnect("clipseek-tests-probe")
        except ImportError:
            why = "needs pymilvus: pip install 'clipseek[milvus]'"
        except Exception as e:  # noqa: BLE001
            why = f"no Milvus server answers at CLIPSEEK_TEST_MILVUS_URI={uri} ({type(e).__name__}); {MILVUS_HOWTO}"
    if why:
        if os.environ.get("CLIPSEEK_REQUIRE_MILVUS") == "1":
            pytest.fail(why + " (CLIPSEEK_REQUIRE_MILVUS=1: a missing server is a failure)", pytrace=False)
        pytest.skip(why)
    return uri


@pytest.fixture(scope="session")
def milvus_prefix(milvus_uri: str) -> Iterator[str]:
    """A collection-name prefix of this session's own; everything under it is dropped at the end."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    yield prefix
    drop_milvus_collections(milvus_uri, lambda name: name.startswith(prefix))


@pytest.fixture(autouse=True)
def _milvus_env(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a `milvus` test: point the store at the test server under the session's prefix, and
    drop the collections the test made (the server stays small across the session; the shared
    field-name registry stays, so each test creates one collection, not two)."""
    if request.node.get_closest_marker("milvus") is None:
        yield
        return
    uri = request.getfixturevalue("milvus_uri")
    prefix = request.getfixturevalue("milvus_prefix")
    before = set(list_milvus_collections(uri))
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPSEEK_MILVUS_URI", uri)
    mp.setenv("CLIPSEEK_MILVUS_PREFIX", prefix)
    mp.delenv("CLIPSEEK_MILVUS_TOKEN", raising=False)
    mp.delenv("CLIPSEEK_MILVUS_DB", raising=False)
    try:
        yield
    finally:
        mp.undo()
        drop_milvus_collections(uri, lambda name: name not in before and name != f"{prefix}_fields")


def list_milvus_collections(uri: str) -> list[str]:
    from pymilvus import connections, utility

    alias = "clipseek-tests-admin"
    try:
        connections.connect(alias, uri=uri, timeout=10)
        return list(utility.list_collections(using=alias, timeout=10))
    except Exception:  # noqa: BLE001 - a stopped server (fault tests) has nothing to list
        return []
    finally:
        connections.disconnect(alias)


def drop_milvus_collections(uri: str, which: Callable[[str], bool]) -> None:
    from pymilvus import connections, utility

    alias = "clipseek-tests-admin"
    try:
        connections.connect(alias, uri=uri, timeout=10)
        for name in utility.list_collections(using=alias, timeout=10):
            if which(name):
                utility.drop_collection(name, using=alias, timeout=30)
    except Exception:  # noqa: BLE001 - a stopped server (fault tests) has nothing to clean
        pass
    finally:
        connections.disconnect(alias)
