"""Zero-shot labels: the CLIP paper's recipe (prompt ensemble, the model's logit scale, softmax over
labels), checked against transformers' own CLIPModel forward, plus template choice and semantics with
an honest toy encoder."""

from __future__ import annotations

import numpy as np
import pytest
from _clipmodels import make, photos
from PIL import Image

from clipseek import zeroshot
from clipseek.encoders.hf import HFClipEncoder
from clipseek.errors import ClipseekError
from clipseek.plugins import get_registry


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make("clip", tmp_path_factory.mktemp("zs") / "clip")


def test_single_template_equals_clipmodel_softmax(clip_dir):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    labels = ["cat", "dog", "car"]
    imgs = photos(3)
    enc = HFClipEncoder(str(clip_dir), runtime="torch")
    probs = zeroshot.classify(enc, imgs, labels, templates=["a photo of a {}."])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    m = CLIPModel.from_pretrained(str(clip_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(clip_dir))
    proc = AutoImageProcessor.from_pretrained(str(clip_dir), backend="pil")
    inputs = tok([f"a photo of a {x}." for x in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = m(**inputs, pixel_values=proc(imgs, return_tensors="pt")["pixel_values"])
    want = out.logits_per_image.softmax(dim=-1).numpy()
    assert np.abs(probs - want).max() < 1e-4
    assert zeroshot.logit_scale(enc) == pytest.approx(float(m.logit_scale.exp()), rel=1e-5)


def test_prompt_ensemble_is_the_mean_of_unit_prompt_vectors(clip_dir):  # type: ignore[no-untyped-def]
    enc = HFClipEncoder(str(clip_dir), runtime="torch")
    t = ["a photo of a {}.", "a picture of a {}."]
    w = zeroshot.label_vectors(enc, ["cat", "dog"], templates=t)
    v = enc.embed_texts(["a photo of a cat.", "a picture of a cat."]).mean(0)
    assert np.abs(w[0] - v / np.linalg.norm(v)).max() < 1e-5
    # vectors in, same probabilities out
    imgs = photos(2)
    p1 = zeroshot.classify(enc, imgs, ["cat", "dog"], templates=t)
    p2 = zeroshot.classify(enc, enc.embed_images(imgs), ["cat", "dog"], templates=t)
    assert np.abs(p1 - p2).max() < 1e-6


class _Recorder:
    """Stand-in encoder that records the prompts it is asked to embed."""

    dim = 4
    templates = {"en": ("a photo of a {}.",), "zh": ("一张{}的照片。",)}
    logit_scale = 50.0

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        self.seen += list(texts)
        return np.eye(4, dtype=np.float32)[[len(t) % 4 for t in texts]] + 0.1


def test_templates_follow_the_label_language_and_the_model():  # type: ignore[no-untyped-def]
    r = _Recorder()
    zeroshot.label_vectors(r, ["cat", "汽车"])
    assert r.seen == ["a photo of a cat.", "一张汽车的照片。"]
    r.seen.clear()
    zeroshot.label_vectors(r, ["cat", "汽车"], lang="en")
    assert r.seen == ["a photo of a cat.", "a photo of a 汽车."]
    en_only = HFClipEncoder("clip-vit-b32")  # an English model gets English templates even for Chinese labels
    assert zeroshot.templates_for(en_only, "汽车")[0] == "a photo of a {}."
    zh = HFClipEncoder("chinese-clip-vit-b16")
    assert zeroshot.templates_for(zh, "汽车")[0] == "一张{}的照片。"
    assert zeroshot.parse_labels("cat, dog，汽车、 卡车,") == ["cat", "dog", "汽车", "卡车"]
    with pytest.raises(ClipseekError, match="distinct"):
        zeroshot.label_vectors(r, ["cat", "cat"])
    with pytest.raises(ClipseekError, match="non-empty"):
        zeroshot.label_vectors(r, [])


def test_semantics_with_an_honest_toy_encoder():  # type: ignore[no-untyped-def]
    enc = get_registry().make_encoder("test-colors")  # colour layout encoder from conftest
    imgs = [Image.new("RGB", (32, 32), c) for c in [(220, 30, 30), (30, 40, 220), (30, 200, 40)]]
    labels = ["red", "blue", "green"]
    probs = zeroshot.classify(enc, imgs, labels, templates=["{}"])
    assert list(probs.argmax(1)) == [0, 1, 2]
    meta = zeroshot.label_metadata(enc, enc.embed_images(imgs), labels, k=2)
    assert meta[0]["labels"][0] == "red" and set(meta[0]["label_probs"]) <= set(labels)


def test_classify_cli_skips_a_bad_image_and_classifies_the_rest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    from click.testing import CliRunner

    from clipseek.cli import cli

    good = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    res = CliRunner().invoke(
        cli, ["classify", str(good), str(bad), "--labels", "red,blue", "--model", "test-colors", "--json"]
    )
    assert res.exit_code == 1
    out = _json.loads(res.output)
    first = out["results"][0]
    assert first["image"] == str(good) and first["top"][0] == "red" and first["probs"]["red"] > first["probs"]["blue"]
    assert out["results"][1] == {"image": str(bad), "error": "not an image (unrecognised format)"}
