"""CLIP, Chinese-CLIP and SigLIP loaded through clipseek's own loader from save_pretrained directories
(tiny random models of the real architectures): loading, vectors equal to transformers' own
get_image_features / get_text_features, batching, identity, errors, and a collection indexed and searched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _clipmodels import ARCHS, TEXTS, make, photo_files, photos, reference

import clipseek
from clipseek.encoders.hf import HFClipEncoder
from clipseek.errors import BadVector, EncoderMismatch, ModelUnavailable, UnknownPlugin
from clipseek.plugins import get_registry

DIMS = {"clip": 24, "chinese_clip": 24, "siglip": 32}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hfmodels")
    return {a: make(a, root / a) for a in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_from_directory_and_matches_transformers(model_dirs, arch):  # type: ignore[no-untyped-def]
    enc = get_registry().make_encoder(str(model_dirs[arch]))
    assert isinstance(enc, HFClipEncoder)
    assert enc.runtime() == "torch"
    assert enc.info.dim == DIMS[arch] and enc.spec == str(model_dirs[arch].resolve())
    imgs = photos(4)
    ref_img, ref_txt = reference(model_dirs[arch], imgs, TEXTS)
    got_img, got_txt = enc.embed_images(imgs), enc.embed_texts(TEXTS)
    assert got_img.dtype == np.float32 and got_img.shape == (4, DIMS[arch])
    # same pixels (bitwise, see test_onnx_parity) and same weights: only float rounding differs
    assert np.abs(got_img - ref_img).max() < 1e-5
    assert np.abs(got_txt - ref_txt).max() < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_batching_does_not_change_results(model_dirs, arch):  # type: ignore[no-untyped-def]
    imgs = photos(5)
    one = HFClipEncoder(str(model_dirs[arch]), runtime="torch", batch_size=1)
    many = HFClipEncoder(str(model_dirs[arch]), runtime="torch", batch_size=16)
    assert np.abs(one.embed_images(imgs) - many.embed_images(imgs)).max() < 1e-5
    # texts of different lengths padded together vs alone
    assert np.abs(one.embed_texts(TEXTS) - many.embed_texts(TEXTS)).max() < 1e-5


def test_version_is_stable_across_processes_and_follows_the_weights(model_dirs, tmp_path):  # type: ignore[no-untyped-def]
    d = model_dirs["clip"]
    v = HFClipEncoder(str(d)).version
    code = f"from clipseek.encoders.hf import HFClipEncoder; print(HFClipEncoder({str(d)!r}).version)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == v
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    assert HFClipEncoder(str(copy)).version == v  # a copy is the same model
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # change one weight byte
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert HFClipEncoder(str(copy)).version != v


def test_preset_is_lazy_and_knows_its_identity():  # type: ignore[no-untyped-def]
    enc = get_registry().make_encoder("clip-vit-b32")
    assert enc.spec == "clip-vit-b32" and enc.model_id == "openai/clip-vit-base-patch32" and enc.dim == 512
    assert enc._md is None  # nothing located or downloaded yet
    zh = get_registry().make_encoder("chinese-clip-vit-b16")
    assert "zh" in zh.templates and zh.calibration["text"].center > 0


def test_unknown_preset_missing_dir_and_missing_files(model_dirs, tmp_path):  # type: ignore[no-untyped-def]
    reg = get_registry()
    with pytest.raises(UnknownPlugin, match="did you mean 'clip-vit-b32'"):
        reg.make_encoder("clip-vit-b33")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        reg.make_encoder(str(tmp_path / "no-such-model"))
    broken = tmp_path / "broken"
    shutil.copytree(model_dirs["clip"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailable, match=r"weights file is missing \(model.safetensors"):
        reg.make_encoder(str(broken))
    (broken / "config.json").unlink()
    with pytest.raises(ModelUnavailable, match="config.json is missing"):
        reg.make_encoder(str(broken))
    notok = tmp_path / "notok"
    shutil.copytree(model_dirs["clip"], notok)
    for f in ("tokenizer.json", "merges.txt"):
        (notok / f).unlink()
    with pytest.raises(ModelUnavailable, match="merges.txt is missing"):
        reg.make_encoder(str(notok))
    odd = tmp_path / "odd"
    shutil.copytree(model_dirs["clip"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["model_type"] = "bert"
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelUnavailable, match="'bert' is not supported"):
        reg.make_encoder(str(odd))


def test_siglip_calibration_comes_from_its_own_logit_scale_and_bias(model_dirs, tmp_path):  # type: ignore[no-untyped-def]
    import math

    from safetensors.numpy import load_file, save_file

    d = tmp_path / "siglip"
    shutil.copytree(model_dirs["siglip"], d)
    w = load_file(str(d / "model.safetensors"))
    w["logit_scale"] = np.array([math.log(117.0)], dtype=np.float32)
    w["logit_bias"] = np.array([-12.9], dtype=np.float32)
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    cal = HFClipEncoder(str(d)).calibration["text"]
    assert cal.center == pytest.approx(12.9 / 117.0, rel=1e-4) and cal.scale == pytest.approx(1 / 117.0, rel=1e-4)
    assert cal.score(12.9 / 117.0) == pytest.approx(0.5, abs=1e-5)


def test_collection_indexed_and_searched_then_model_changed(model_dirs, tmp_path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in photo_files(6):
        shutil.copy(f, folder)
    model = tmp_path / "model"
    shutil.copytree(model_dirs["clip"], model)
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.create("pics", model=str(model), store="memory")
        disk = eng.create("disk", model=str(model))  # the default, persistent store
        disk.index(folder)
        rep = col.index(folder)
        assert col.count() == 6, rep
        res = col.search("a photo of a cat", top=3)
        assert len(res.hits) == 3 and all(0 <= h.score <= 1 for h in res.hits)
        first = sorted(folder.iterdir())[0]
        hit = col.search(image=first, top=1).hits[0]
        assert Path(hit.id).name == first.name and hit.cosine > 0.99
        with pytest.raises(BadVector, match="dimension"):
            col.search(vector=np.ones(DIMS["clip"] + 1), top=1)
    # replace the weights in place by a model of another architecture and dimension
    shutil.rmtree(model)
    shutil.copytree(model_dirs["siglip"], model)
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.open("disk")
        with pytest.raises(EncoderMismatch, match="re-index"):
            col.search("a photo of a cat")
        with pytest.raises(EncoderMismatch):
            col.index(folder)
        assert col.count() == 6  # nothing indexed was touched
