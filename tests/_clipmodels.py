"""Helpers shared by the CLIP-family tests: tiny random models of the real architectures, reference
vectors computed with transformers directly (never through clipseek's code), real photos."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
from PIL import Image

ARCHS = ("clip", "chinese_clip", "siglip")
TEXTS = ["a photo of a cat", "一张猫的照片。", "a white SUV with a roof rack", "红色的汽车", "x", "A photo OF two cats!"]


def photo_files(n: int | None = None) -> list[str]:
    import skimage

    files = sorted(glob.glob(os.path.join(os.path.dirname(skimage.__file__), "data", "*.png")))
    return files[:n] if n else files


def photos(n: int | None = 6) -> list[Image.Image]:
    return [Image.open(f).convert("RGB") for f in photo_files(n)]


def make(arch: str, out: Path) -> Path:
    from clipseek.encoders.random_models import MAKERS

    return MAKERS[arch](out)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference(model_dir: Path, images: list[Image.Image], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own processor + get_image_features / tokenizer + get_text_features, normalised."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from clipseek.encoders.hf import features

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    proc = AutoImageProcessor.from_pretrained(str(model_dir), backend="pil")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    arch = model.config.model_type
    max_len = {"clip": 77, "chinese_clip": 52, "siglip": 64}[arch]
    enc = tok(texts, padding="max_length" if arch == "siglip" else True, truncation=True, max_length=max_len,
              return_tensors="pt")
    with torch.no_grad():
        img = features(model.get_image_features(pixel_values=proc(images, return_tensors="pt")["pixel_values"]))
        txt = features(model.get_text_features(**enc))
    return unit(img.numpy()), unit(txt.numpy())


def save_with_transformers(arch: str, out: Path, staging: Path) -> Path:
    """A directory as a user's transformers writes it: a tiny random model of ``arch`` loaded with
    ``AutoModel`` + ``AutoProcessor`` and saved with their own ``save_pretrained`` (transformers 5:
    ``processor_config.json`` with the image settings nested under ``"image_processor"``, no
    ``preprocessor_config.json``; tokenizer.json or spiece.model + tokenizer_config.json)."""
    from transformers import AutoModel, AutoProcessor

    src = make(arch, staging)
    AutoModel.from_pretrained(str(src)).save_pretrained(str(out))
    AutoProcessor.from_pretrained(str(src)).save_pretrained(str(out))
    return out
