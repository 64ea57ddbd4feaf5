"""``clipseek model export``: write a model's image and text towers to ONNX (fp32, and int8).

Writes into ``<model_dir>/onnx/``:

- ``image.onnx``: ``pixel_values (N, 3, H, W) float32 -> image_embeds (N, D)`` (projected, not normalised:
  exactly ``get_image_features``); ``text.onnx``: ``input_ids [, attention_mask, token_type_ids]
  (N, L) int64 -> text_embeds (N, D)`` (``get_text_features``). Batch and sequence axes are dynamic.
- ``image.int8.onnx`` / ``text.int8.onnx`` (with ``int8=True``): ONNX Runtime dynamic quantisation
  (``quantize_dynamic``, int8 weights, activations quantised at run time). The recipe (``int8_recipe`` in
  the manifest; :data:`INT8_RECIPES`) quantises every op type ORT supports by default except ``Conv``
  (``no-conv``): the patch embedding as ``ConvInteger`` took a quarter of the int8 image tower's time,
  against a sixth of that in fp32, so leaving it fp32 makes real-size ViT-B/32 1.2x faster at the
  same cosine to fp32 (``benchmarks/int8_recipes.py``; figures in benchmarks/README.md).
- ``tokenizer.json`` when the model's tokenizer is a ``tokenizers`` one and gives the same ids as
  transformers' tokenizer on a set of English and Chinese probes (lets the query path skip transformers).
- ``manifest.json``: architecture, dimension, inputs, text length/padding, the model's logit scale/bias,
  the preprocessing, the fingerprint of the source weights, versions, and the parity measured right
  after export (minimum cosine of fp32 and int8 outputs against the torch reference on probe inputs).

Exported with the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17): it
needs no ``onnxscript`` and handles these models. Parity is measured on random probe images and real
probe texts; an fp32 export whose cosine to torch is below 0.9999 is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelUnavailable

OPSET = 17
PROBE_TEXTS = ["a photo of a cat", "一张狗的照片。", "a white SUV with a roof rack on a rainy street at night",
               "红色的汽车", "x"]
FP32_MIN_COSINE = 0.9999


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


#: int8 recipes: the op types ``quantize_dynamic`` quantises (None: all it supports by default, which in
#: ONNX Runtime 1.2x-1.3x are Attention, Conv, EmbedLayerNormalization, Gather, LSTM, MatMul, Transpose).
INT8_RECIPES: dict[str, list[str] | None] = {
    "no-conv": ["Attention", "EmbedLayerNormalization", "Gather", "LSTM", "MatMul", "Transpose"],
    "all-ops": None,
    "matmul-gemm": ["MatMul", "Gemm"],  # rclip's recipe (its history; 3.3.0 ships fp32)
}
INT8_RECIPE = "no-conv"


def export(model_dir: str | Path, *, int8: bool = True, default: str | None = None, opset: int = OPSET,
           progress: Any = None, int8_recipe: str = INT8_RECIPE) -> dict[str, Any]:
    """Export ``model_dir``'s towers; return the manifest. ``default``: which precision the encoder picks
    when it finds this export ("fp32", or "int8"; default fp32). ``int8_recipe``: a key of
    :data:`INT8_RECIPES`, recorded in the manifest."""
    from .. import modelfiles as mf
    from .hf import PREPROCESS_VERSION, HFClipEncoder, TorchBackend, features, text_settings

    say = progress or (lambda msg: None)
    md = mf.check_model_dir(model_dir, need="torch")
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        import torch
    except ImportError as e:
        raise ModelUnavailable(f"export needs torch, onnx and onnxruntime ({e}); pip install 'clipseek[clip,onnx]'") from None

    enc = HFClipEncoder(str(md.path), runtime="torch")
    arch = md.arch or "clip"
    text_cfg = text_settings(md.path, arch, enc.preset)
    ref = TorchBackend(md.path, arch, text_cfg)
    pipe = enc.pipeline
    h, w = pipe.output_size
    model = ref.model

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, pixel_values):  # type: ignore[no-untyped-def]
            return features(self.m.get_image_features(pixel_values=pixel_values))

    names = list(ref.input_names)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, *args):  # type: ignore[no-untyped-def]
            return features(self.m.get_text_features(**dict(zip(names, args))))

    out_dir = md.path / "onnx"
    tmp = md.path / ".onnx-export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    probe_px = rng.standard_normal((3, 3, h, w)).astype(np.float32)
    probe_tok = ref.tokenize(PROBE_TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        say("exporting the image tower")
        torch.onnx.export(
            ImageTower().eval(), (torch.from_numpy(probe_px[:2]),), str(tmp / "image.onnx"), dynamo=False,
            input_names=["pixel_values"], output_names=["image_embeds"], opset_version=opset,
            dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        )
        say("exporting the text tower")
        seq_axes = {n: {0: "batch", 1: "sequence"} for n in names}
        torch.onnx.export(
            TextTower().eval(), tuple(probe_tok[n][:2] for n in names), str(tmp / "text.onnx"), dynamo=False,
            input_names=names, output_names=["text_embeds"], opset_version=opset,
            dynamic_axes={**seq_axes, "text_embeds": {0: "batch"}},
        )
    with torch.inference_mode():
        ref_img = ref.images(probe_px)
        ref_txt = ref.texts(PROBE_TEXTS)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    feeds_txt = {n: probe_tok[n].numpy().astype(np.int64) for n in names}

    def measure(img_file: str, txt_file: str) -> tuple[float, float]:
        si = ort.InferenceSession(str(tmp / img_file), so, providers=["CPUExecutionProvider"])
        st = ort.InferenceSession(str(tmp / txt_file), so, providers=["CPUExecutionProvider"])
        ci = _cos_rows(si.run(None, {"pixel_values": probe_px})[0], ref_img)
        ct = _cos_rows(st.run(None, feeds_txt)[0], ref_txt)
        return float(ci.min()), float(ct.min())

    fp_i, fp_t = measure("image.onnx", "text.onnx")
    if min(fp_i, fp_t) < FP32_MIN_COSINE:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelUnavailable(f"ONNX export of {md.path} does not match torch (cosine {min(fp_i, fp_t):.6f}); not written")
    parity: dict[str, Any] = {"fp32_min_cosine": {"image": fp_i, "text": fp_t}}
    int8_files = None
    if int8:
        say("quantising to int8")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for part in ("image", "text"):
            quantize_dynamic(str(tmp / f"{part}.onnx"), str(tmp / f"{part}.int8.onnx"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=INT8_RECIPES[int8_recipe])
        q_i, q_t = measure("image.int8.onnx", "text.int8.onnx")
        parity["int8_min_cosine"] = {"image": q_i, "text": q_t}
        int8_files = {"image": "image.int8.onnx", "text": "text.int8.onnx"}

    # a tokenizers-only tokenizer for the query path, when it reproduces transformers' ids exactly
    tok_meta: dict[str, Any] = {}
    backend_tok = getattr(ref.tokenizer, "backend_tokenizer", None)
    pad_id = ref.tokenizer.pad_token_id if ref.tokenizer.pad_token_id is not None else 0
    pad_tok = ref.tokenizer.pad_token or ""
    if backend_tok is not None:
        from tokenizers import Tokenizer

        t2 = Tokenizer.from_str(backend_tok.to_str())
        t2.enable_truncation(max_length=text_cfg["max_length"])
        t2.enable_padding(pad_id=pad_id, pad_token=pad_tok, length=text_cfg["max_length"] if text_cfg["pad_to_max_length"] else None)
        probes = PROBE_TEXTS + ["A Photo OF  two   CATS!", "白色SUV 车顶行李架", "word " * 100]
        mine = [e.ids for e in t2.encode_batch(probes)]
        theirs = ref.tokenize(probes)["input_ids"].tolist()
        if mine == theirs:
            t2.save(str(tmp / "tokenizer.json"))
            tok_meta["tokenizer_json"] = True
    scale, bias = ref.logit_params()
    manifest = {
        "format": 1,
        "arch": arch,
        "hub_id": md.hub_id,
        "dim": int(ref_img.shape[1]),
        "source_fingerprint": mf.fingerprint(md.path),
        "preprocess_version": PREPROCESS_VERSION,
        "image": {"file": "image.onnx", "input": "pixel_values", "size": [h, w]},
        "text": {"file": "text.onnx", "inputs": names, "max_length": text_cfg["max_length"],
                 "pad_to_max_length": text_cfg["pad_to_max_length"], "pad_token_id": int(pad_id), "pad_token": pad_tok,
                 **tok_meta},
        "int8": int8_files,
        "int8_recipe": int8_recipe if int8_files else None,
        "default": default or "fp32",
        "logit_scale": scale,
        "logit_bias": bias,
        "preprocess": pipe.to_dict(),
        "parity": parity,
        "opset": opset,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
    }
    if manifest["default"] == "int8" and not int8_files:
        raise ModelUnavailable("default='int8' needs int8=True")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    # swap in atomically enough: the old export stays until the new one is complete
    old = md.path / ".onnx-old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


__all__ = ["export"]
