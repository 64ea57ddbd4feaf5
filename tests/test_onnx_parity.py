"""Preprocessing parity with transformers' image processors on real photos, and ONNX Runtime parity with
transformers' get_image_features / get_text_features for tiny random CLIP, Chinese-CLIP and SigLIP models.

Measured bounds (tiny random models, this machine):
- preprocessing vs the PIL-backend processors: max abs difference 0 (bitwise equal) on all 23
  scikit-image photos, greyscale/RGBA/palette images and a 20x12 image;
- ONNX fp32 vs torch: cosine >= 0.9999998 (the bar is 1 - 1e-4);
- ONNX int8 (dynamic quantisation) vs torch: cosine >= 0.998 on these tiny models (the bar is 0.99;
  the real-size figures are in benchmarks/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _clipmodels import ARCHS, TEXTS, make, photo_files, photos, reference, unit
from PIL import Image

from clipseek.encoders.hf import HFClipEncoder
from clipseek.encoders.onnx_export import export
from clipseek.encoders.preprocess import ImagePipeline

PROCESSORS = {
    "clip": ("transformers.models.clip.image_processing_pil_clip", "CLIPImageProcessorPil"),
    "chinese_clip": ("transformers.models.chinese_clip.image_processing_pil_chinese_clip", "ChineseCLIPImageProcessorPil"),
    "siglip": ("transformers.models.siglip.image_processing_pil_siglip", "SiglipImageProcessorPil"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnxmodels")
    out = {}
    for a in ARCHS:
        d = make(a, root / a)
        export(d, int8=True)
        out[a] = d
    return out


def _odd_images() -> list[Image.Image]:
    base = Image.open(photo_files()[0]).convert("RGB")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return [base.convert("L"), rgba, base.convert("P"), base.resize((20, 12)), base.resize((300, 1000))]


@pytest.mark.parametrize("arch", ARCHS)
def test_preprocessing_matches_the_reference_processor_on_real_photos(exported, arch):  # type: ignore[no-untyped-def]
    import importlib

    mod, cls = PROCESSORS[arch]
    cfg = json.loads((exported[arch] / "preprocessor_config.json").read_text())
    ref = getattr(importlib.import_module(mod), cls)(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
    mine = ImagePipeline.from_model_dir(exported[arch], arch)
    worst = 0.0
    for im in [Image.open(f) for f in photo_files()] + _odd_images():
        want = ref(im, return_tensors="np")["pixel_values"][0]
        got = mine([im])[0]
        assert got.shape == want.shape and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst == 0.0, worst  # bitwise equal, as preprocess.py and ARCHITECTURE.md say


def test_processor_config_forms_are_read_like_transformers():  # type: ignore[no-untyped-def]
    p = ImagePipeline.from_processor_config({"size": 224, "crop_size": 224, "do_center_crop": True}, "clip")
    assert p.resize_mode == "shortest_edge" and p.resize_to == 224 and p.crop == (224, 224)
    p = ImagePipeline.from_processor_config({"size": {"height": 256, "width": 256}}, "siglip")
    assert p.resize_mode == "exact" and p.crop is None and p.output_size == (256, 256) and p.mean == (0.5, 0.5, 0.5)
    assert ImagePipeline.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_fp32_and_int8_match_transformers(exported, arch):  # type: ignore[no-untyped-def]
    imgs = photos(4)
    ref_img, ref_txt = reference(exported[arch], imgs, TEXTS)
    fp32 = HFClipEncoder(str(exported[arch]))  # auto: the export is found and used
    assert fp32.runtime() == "onnx"
    cos_i = (unit(fp32.embed_images(imgs)) * ref_img).sum(1)
    cos_t = (unit(fp32.embed_texts(TEXTS)) * ref_txt).sum(1)
    assert cos_i.min() >= 1 - 1e-4 and cos_t.min() >= 1 - 1e-4, (cos_i, cos_t)
    q = HFClipEncoder(str(exported[arch]), runtime="onnx-int8")
    qi = (unit(q.embed_images(imgs)) * ref_img).sum(1)
    qt = (unit(q.embed_texts(TEXTS)) * ref_txt).sum(1)
    assert qi.min() >= 0.99 and qt.min() >= 0.99, (qi, qt)
    # same weights -> same version for fp32 ONNX and torch; int8 is marked
    assert fp32.version == HFClipEncoder(str(exported[arch]), runtime="torch").version
    assert q.version == fp32.version + "-int8"
    # batching does not change ONNX results either
    one = HFClipEncoder(str(exported[arch]), batch_size=1)
    assert np.abs(one.embed_images(imgs) - fp32.embed_images(imgs)).max() < 1e-5
    assert np.abs(one.embed_texts(TEXTS) - fp32.embed_texts(TEXTS)).max() < 1e-5


def test_manifest_records_parity_and_logit_scale(exported):  # type: ignore[no-untyped-def]
    m = json.loads((exported["clip"] / "onnx" / "manifest.json").read_text())
    assert min(m["parity"]["fp32_min_cosine"].values()) >= 0.9999
    assert m["text"]["tokenizer_json"] is True and m["text"]["max_length"] == 77
    assert m["logit_scale"] == pytest.approx(np.exp(2.6592), rel=1e-4)  # CLIPConfig's initial value
    for f in ("image.onnx", "text.onnx", "image.int8.onnx", "text.int8.onnx"):
        assert (exported["clip"] / "onnx" / f).is_file()


@pytest.mark.parametrize("arch", ["clip", "siglip"])
def test_onnx_query_path_imports_no_torch(exported, arch):  # type: ignore[no-untyped-def]
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from clipseek.encoders.hf import HFClipEncoder\n"
        f"e = HFClipEncoder({str(exported[arch])!r})\n"
        "v = e.embed_texts(['a photo of a cat', '一张猫的照片。'])\n"
        "w = e.embed_images([Image.new('RGB', (64, 48), (200, 30, 30))])\n"
        "print(e.runtime(), v.shape, w.shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "onnx" and out[-1] == "False", out
