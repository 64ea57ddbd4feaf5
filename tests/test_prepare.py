"""The split image path (``Encoder.prepare`` on the loader threads, ``_embed_prepared`` on the encoding
thread) gives bit for bit the vectors of the one-call path it replaced, for the offline model, the
torch CLIP backend and the ONNX backend (tiny random models), and ingest stores exactly those.

The oracle is the pre-split computation written out here: the pipeline over the whole batch, then the
backend (or, offline, the network) on the stacked array, then the row normalisation every encoder gets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _clipmodels import make, photo_files, photos
from PIL import Image

import clipseek
from clipseek.encoders.hf import HFClipEncoder
from clipseek.encoders.offline import OfflineEncoder, preprocess
from clipseek.encoders.onnx_export import export
from clipseek.encoders.preprocess import ImagePipeline
from clipseek.images import load_image
from clipseek.types import as_unit_vectors


def _images() -> list[Image.Image]:
    odd = photos(1)[0]
    return [*photos(5), odd.convert("L").convert("RGB"), odd.resize((20, 12)), odd.resize((300, 1000))]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = make("clip", tmp_path_factory.mktemp("prep") / "clip")
    export(d, int8=True)
    return d


def test_int8_export_quantises_the_matmuls_and_the_embedding_table_but_not_the_patch_conv(clip_dir: Path) -> None:
    import onnx

    man = json.loads((clip_dir / "onnx" / "manifest.json").read_text())
    assert man["int8_recipe"] == "no-conv"
    image_ops = {n.op_type for n in onnx.load(str(clip_dir / "onnx" / man["int8"]["image"])).graph.node}
    assert "MatMulInteger" in image_ops and "Conv" in image_ops and "ConvInteger" not in image_ops
    text = onnx.load(str(clip_dir / "onnx" / man["int8"]["text"]))
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    quantized = {i.name for i in text.graph.initializer if i.data_type in eight_bit}
    assert any("token_embedding" in name for name in quantized)  # Gather's table: 8-bit too, as "all-ops" had it


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_clip_prepare_then_embed_equals_the_one_call_path_bitwise(clip_dir: Path, runtime: str) -> None:
    imgs = _images()
    enc = HFClipEncoder(str(clip_dir), runtime=runtime, batch_size=3)
    pipe = ImagePipeline.from_dict(enc._resolve().onnx["preprocess"]) if runtime == "onnx" else \
        ImagePipeline.from_model_dir(clip_dir, "clip")
    backend = enc._load()
    old = as_unit_vectors(np.concatenate([backend.images(pipe(imgs[i : i + 3])) for i in range(0, len(imgs), 3)]),
                          enc.dim)
    split = enc.embed_prepared([enc.prepare(im) for im in imgs])
    assert split.dtype == np.float32 and np.array_equal(split, old)
    assert np.array_equal(enc.embed_images(imgs), old)


def test_offline_prepare_then_embed_equals_the_one_call_path_bitwise(tmp_path: Path) -> None:
    import torch

    imgs = _images()
    enc = OfflineEncoder(cache_dir=tmp_path)
    enc._load_image_model()
    x = torch.from_numpy(np.stack([preprocess(im) for im in imgs])).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        old = as_unit_vectors(enc._net.extract_features(x).mean(dim=(2, 3)).numpy().astype(np.float32), enc.dim)
    assert np.array_equal(enc.embed_prepared([enc.prepare(im) for im in imgs]), old)
    assert np.array_equal(enc.embed_images(imgs), old)
    enc.close()


def test_ingest_stores_what_embed_images_gives_for_the_decoded_files(clip_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "pics"
    d.mkdir()
    files = [Path(shutil.copy(f, d)) for f in photo_files(6)]
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.create("p", model=str(clip_dir))
        rep = col.index(d)
        assert rep.embedded == 6
        stored = {r.id: np.asarray(r.vector) for r in col.store.get([str(f.resolve()) for f in files])}
        enc = col.encoder
        want = enc.embed_images([load_image(f, fit=enc.image_side, draft=enc.draft_side) for f in files])
    got = np.stack([stored[str(f.resolve())] for f in files])
    # Within one float32 ulp: the store normalises the rows it is given once more.
    assert np.abs(got - want).max() <= 6e-8, np.abs(got - want).max(axis=1)


def test_default_prepare_keeps_plugins_working(make_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conftest import COLORS

    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.create("c", model="test-colors")  # defines only _embed_images
        red = make_image(tmp_path / "r.png", COLORS["red"])
        assert col.encoder.prepare(img := Image.open(red)) is img
        col.index(red)
        rec = col.store.get([str(red.resolve())])[0]
        assert rec is not None and np.array_equal(rec.vector, col.encoder.embed_images([load_image(red)])[0])


def test_clip_loader_decodes_down_to_the_model_input_side(clip_dir: Path) -> None:
    cfg = json.loads((clip_dir / "preprocessor_config.json").read_text())
    side = cfg["size"]["shortest_edge"] if isinstance(cfg["size"], dict) else cfg["size"]
    enc = HFClipEncoder(str(clip_dir))
    assert enc.draft_side == side
    import io

    buf = io.BytesIO()
    Image.new("RGB", (side * 9, side * 5), (90, 140, 200)).save(buf, "JPEG")
    got = load_image(buf.getvalue(), fit=enc.image_side, draft=enc.draft_side)  # decoded at 1/4 scale: shorter side 5/4 of the input's
    assert side <= min(got.size) < 2 * side


def test_an_indexed_jpeg_searched_as_the_query_image_finds_itself_at_cosine_one(clip_dir: Path, tmp_path: Path) -> None:
    # The query path must decode exactly as ingest does (DCT scale, reduction): it once decoded
    # JPEGs at 448 while ingest drafted them to the model's input side, so a file scored < 1 to itself.
    d = tmp_path / "pics"
    d.mkdir()
    for i, f in enumerate(photo_files(3)):
        Image.open(f).convert("RGB").resize((1600, 1200)).save(d / f"p{i}.jpg", quality=90)
    with clipseek.Engine(tmp_path / "data") as eng:
        col = eng.create("j", model=str(clip_dir))
        assert col.index(d).embedded == 3
        for i in range(3):
            q = d / f"p{i}.jpg"
            top = col.search(image=q, top=1).hits[0]
            assert top.id == str(q.resolve())
            assert top.cosine == pytest.approx(1.0, abs=2e-6)


@pytest.mark.parametrize("mean,std", [((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                                      ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_normalisation_table_gives_the_reference_arithmetic_for_every_byte_of_every_channel(mean, std) -> None:  # type: ignore[no-untyped-def]
    # every value 0..255 in every channel, each channel in a different order, so a swapped channel shows
    r = np.arange(256, dtype=np.uint8).reshape(16, 16)
    px = np.stack([r, r[::-1], r.T], axis=-1)
    pipe = ImagePipeline(resize_mode="none", resize_to=16, crop=None, mean=mean, std=std)
    got = pipe([Image.fromarray(px)])[0]
    # transformers' steps written out: uint8 -> float64 * (1/255) -> float32, then (x - mean) / std in float32
    x = (px.astype(np.float64) * (1 / 255)).astype(np.float32)
    want = ((x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)).transpose(2, 0, 1)
    assert got.shape == (3, 16, 16) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, want)
    assert got[0, 0, 0] == np.float32((np.float32(0.0) - np.float32(mean[0])) / np.float32(std[0]))
