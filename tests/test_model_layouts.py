"""Model directories as users have them: what transformers 5's own ``save_pretrained`` of model + processor
writes (``processor_config.json`` with nested image settings, no ``preprocessor_config.json``), and hub
layouts that differ from clipseek's generated ones (CLIP's legacy ``eos_token_id: 2``, a Chinese-CLIP repo
with ``pytorch_model.bin`` + ``vocab.txt`` only, a SigLIP tokenizer that gives only ``input_ids``).

Each directory is indexed and searched through the CLI and the cosines are compared with transformers'
own processor + model (the oracle in ``_clipmodels.reference`` never calls clipseek's preprocessing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _clipmodels import ARCHS, make, photo_files, reference, save_with_transformers
from click.testing import CliRunner
from PIL import Image

from clipseek import modelfiles as mf
from clipseek.cli.main import cli
from clipseek.encoders.hf import HFClipEncoder

QUERIES = ["a photo of a cat", "红色的汽车"]
N_PHOTOS = 6


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("v5")
    return {a: save_with_transformers(a, root / a, root / f"staging-{a}") for a in ARCHS}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for f in photo_files(N_PHOTOS):
        shutil.copy(f, d)
    return d


def _index_and_search(model_dir: Path, folder: Path, data: Path) -> list[list[dict]]:
    """`clipseek index` then `clipseek search --json` for each query; the hits of each query."""
    r = CliRunner()
    res = r.invoke(cli, ["--data-dir", str(data), "index", str(folder), "-c", "c", "--model", str(model_dir), "-q"])
    assert res.exit_code == 0, res.output
    out = []
    for q in QUERIES:
        res = r.invoke(cli, ["--data-dir", str(data), "search", q, "-c", "c", "-n", str(N_PHOTOS), "--json"])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.stdout)["hits"])
    return out


def _assert_matches_transformers(model_dir: Path, folder: Path, data: Path) -> None:
    files = sorted(folder.iterdir())
    ref_img, ref_txt = reference(model_dir, [Image.open(f) for f in files], QUERIES)
    want = ref_txt @ ref_img.T  # (queries, photos): transformers' own cosines
    for qi, hits in enumerate(_index_and_search(model_dir, folder, data)):
        assert len(hits) == N_PHOTOS
        by_name = {Path(h["id"]).name: h["cosine"] for h in hits}
        got = np.array([by_name[f.name] for f in files])
        assert np.abs(got - want[qi]).max() < 2e-5, (QUERIES[qi], got, want[qi])
        # ranks equal transformers' ranks
        assert [Path(h["id"]).name for h in hits] == [files[i].name for i in np.argsort(-want[qi], kind="stable")]


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers5_saved_directory_indexes_and_searches_like_transformers(saved, folder, tmp_path, arch):  # type: ignore[no-untyped-def]
    d = saved[arch]
    assert (d / "processor_config.json").is_file() and not (d / "preprocessor_config.json").exists()
    _assert_matches_transformers(d, folder, tmp_path / "data")


def test_transformers5_layout_gives_the_processor_s_image_size(saved):  # type: ignore[no-untyped-def]
    """The pipeline is the saved processor's, not the architecture's class defaults."""
    clip, zh, sig = (HFClipEncoder(str(saved[a])).pipeline for a in ARCHS)
    assert (clip.resize_mode, clip.resize_to, clip.crop) == ("shortest_edge", 224, (224, 224))
    assert (zh.resize_mode, zh.resize_to, zh.crop) == ("exact", (224, 224), None)
    assert (sig.resize_mode, sig.resize_to, sig.crop) == ("exact", (256, 256), None)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_of_a_transformers5_directory_then_onnx_index_and_search(saved, folder, tmp_path, arch):  # type: ignore[no-untyped-def]
    d = tmp_path / arch
    shutil.copytree(saved[arch], d)
    res = CliRunner().invoke(cli, ["model", "export", str(d), "--no-int8"])
    assert res.exit_code == 0, res.output
    man = json.loads((d / "onnx" / "manifest.json").read_text())
    size = {"clip": [224, 224], "chinese_clip": [224, 224], "siglip": [256, 256]}[arch]
    assert man["image"]["size"] == size and man["preprocess"]["resize_mode"] == ("shortest_edge" if arch == "clip" else "exact")
    assert HFClipEncoder(str(d)).runtime() == "onnx"
    _assert_matches_transformers(d, folder, tmp_path / "data")


def test_fingerprint_follows_processor_config_json(saved, tmp_path):  # type: ignore[no-untyped-def]
    d = tmp_path / "clip"
    shutil.copytree(saved["clip"], d)
    before = mf.fingerprint(d)
    cfg = json.loads((d / "processor_config.json").read_text())
    cfg["image_processor"]["size"] = {"shortest_edge": 256}
    (d / "processor_config.json").write_text(json.dumps(cfg))
    assert mf.fingerprint(d) != before


def test_nested_processor_config_wins_over_preprocessor_config_like_transformers(saved, tmp_path):  # type: ignore[no-untyped-def]
    """transformers reads processor_config.json's "image_processor" first, preprocessor_config.json after."""
    d = tmp_path / "both"
    shutil.copytree(saved["siglip"], d)
    (d / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 224, "width": 224}}))
    assert HFClipEncoder(str(d)).pipeline.output_size == (256, 256)
    cfg = json.loads((d / "processor_config.json").read_text())
    del cfg["image_processor"]
    (d / "processor_config.json").write_text(json.dumps(cfg))  # a processor file without image settings
    assert HFClipEncoder(str(d)).pipeline.output_size == (224, 224)


# ---------------------------------------------------------------------------------------- hub layouts


def _torch_then_onnx(d: Path, folder: Path, tmp_path: Path) -> None:
    """Index and search with the torch runtime, then again after `clipseek model export` (ONNX)."""
    _assert_matches_transformers(d, folder, tmp_path / "torch")
    res = CliRunner().invoke(cli, ["model", "export", str(d), "--no-int8"])
    assert res.exit_code == 0, res.output
    assert HFClipEncoder(str(d)).runtime() == "onnx"
    _assert_matches_transformers(d, folder, tmp_path / "onnx")


def test_clip_with_the_legacy_eos_token_id_2(folder, tmp_path):  # type: ignore[no-untyped-def]
    """openai/clip-vit-base-patch32's config says eos_token_id 2; transformers then pools at the argmax id."""
    d = make("clip", tmp_path / "legacy")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"].update(bos_token_id=0, eos_token_id=2, pad_token_id=1)
    (d / "config.json").write_text(json.dumps(cfg))
    _torch_then_onnx(d, folder, tmp_path)


def test_chinese_clip_with_pytorch_model_bin_and_vocab_txt_only(folder, tmp_path):  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import load_file

    d = make("chinese_clip", tmp_path / "zh")
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    keep = {"config.json", "preprocessor_config.json", "pytorch_model.bin", "vocab.txt"}
    for f in list(d.iterdir()):
        if f.name not in keep:
            f.unlink()
    _torch_then_onnx(d, folder, tmp_path)


def test_siglip_tokenizer_with_only_input_ids(folder, tmp_path):  # type: ignore[no-untyped-def]
    d = make("siglip", tmp_path / "sig")
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["model_input_names"] = ["input_ids"]
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    from transformers import AutoTokenizer

    assert list(AutoTokenizer.from_pretrained(str(d))(["a cat"]).keys()) == ["input_ids"]
    _torch_then_onnx(d, folder, tmp_path)
