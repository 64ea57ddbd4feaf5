"""Image preprocessing for CLIP-family models with PIL + numpy only (no torch, no transformers).

The reference is transformers' **PIL backend** image processors (``CLIPImageProcessorPil``,
``ChineseCLIPImageProcessorPil``, ``SiglipImageProcessorPil``; in transformers 4.x the "slow"
``CLIPImageProcessor``). That backend is chosen because:

- it is what the original OpenAI CLIP and Chinese-CLIP pipelines do (a PIL bicubic resize, then a
  crop of the resized image), so it reproduces the preprocessing the weights were trained/evaluated with;
- transformers 5 falls back to it whenever torchvision is absent (our case: torch without torchvision),
  whereas the torchvision backend resizes a tensor with antialiased bicubic interpolation and differs
  from PIL by up to a few grey levels per pixel.

The steps, each exactly as the reference does them. The result is bitwise equal to the reference: the
parity test in ``tests/test_onnx_parity.py`` requires a max abs difference of exactly 0 against the PIL
processor of each architecture (CLIP, Chinese-CLIP, SigLIP) on all 23 scikit-image photos and on
greyscale, RGBA, palette, tiny and tall images (measured 0.0 for all three with transformers 5.x):

1. **Convert to RGB**: transparency (an alpha band or a palette transparency) is composited onto white,
   then ``convert("RGB")`` (greyscale and palette images included).
2. **Resize** with PIL, bicubic (``resample=3``), ``reducing_gap=None``:
   - ``shortest_edge`` mode (CLIP): the shorter side becomes ``S``; the longer side
     ``int(S * long / short)`` (truncated, not rounded, as ``get_resize_output_image_size`` does);
   - ``exact`` mode (Chinese-CLIP, SigLIP): squash to ``(height, width)`` ignoring the aspect ratio.
3. **Centre crop** (CLIP only) to ``(h, w)``: ``top = (H - h) // 2``, ``left = (W - w) // 2``. An image
   smaller than the crop is zero-padded around the centre first (transformers' behaviour; it can only
   happen when the crop is larger than the resize target).
4. **Rescale**: ``uint8 -> float64 * (1/255) -> float32`` (the reference upcasts to float64 first).
5. **Normalise** per channel in float32: ``(x - mean) / std``. Steps 4 and 5 are precomputed for the
   256 values of each channel with that same arithmetic and applied by table lookup (bitwise equal).
6. **Layout**: channels first, ``(N, 3, H, W)`` float32, C-contiguous.

:func:`image_processor_config` finds a directory's settings where transformers does (the ``"image_processor"``
section of transformers 5's ``processor_config.json`` first, then ``preprocessor_config.json``);
:class:`ImagePipeline.from_processor_config` reads them the way transformers does (``size`` as an int, ``{"shortest_edge": S}`` or ``{"height", "width"}``; ``crop_size`` as an int
or a dict; missing keys fall back to the architecture's class defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from math import ceil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelUnavailable

#: CLIP's normalisation (OpenAI CLIP and Chinese-CLIP); the one place these numbers are written.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Class defaults of transformers' image processors, per model_type (used for keys a config omits).
ARCH_PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip": {
        "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
        "image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD),
        "resample": 3, "default_to_square": False,
    },
    "chinese_clip": {
        "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
        "image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD),
        "resample": 3, "default_to_square": False,
    },
    "siglip": {
        "size": {"height": 224, "width": 224}, "do_center_crop": False,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3, "default_to_square": False,
    },
}


def _size_dict(size: Any, default_to_square: bool) -> dict[str, int]:
    """transformers' ``get_size_dict`` for the cases CLIP-family configs use."""
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, dict):
        return {k: int(v) for k, v in size.items() if v is not None}
    raise ValueError(f"unsupported image size setting {size!r}")


@dataclass(frozen=True)
class ImagePipeline:
    """One model's image preprocessing; call it on a list of PIL images."""

    resize_mode: str  # "shortest_edge" | "exact" | "none"
    resize_to: tuple[int, int] | int  # shortest edge (int) or (height, width)
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    resample: int = Image.BICUBIC

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if self.resize_mode == "exact":
            return self.resize_to  # type: ignore[return-value]
        raise ValueError("this pipeline has no fixed output size (shortest-edge resize without a crop)")

    # ------------------------------------------------------------------------------------------ builders

    @classmethod
    def from_processor_config(cls, cfg: dict[str, Any], arch: str = "clip") -> "ImagePipeline":
        d = dict(ARCH_PROCESSOR_DEFAULTS.get(arch, ARCH_PROCESSOR_DEFAULTS["clip"]))
        d.update({k: v for k, v in cfg.items() if v is not None})
        square = bool(d.get("default_to_square", False))
        if d.get("do_resize", True):
            size = _size_dict(d["size"], square)
            if "shortest_edge" in size and "longest_edge" not in size:
                mode, to = "shortest_edge", size["shortest_edge"]
            elif "height" in size and "width" in size:
                mode, to = "exact", (size["height"], size["width"])
            else:
                raise ValueError(f"unsupported resize setting {size!r} (need shortest_edge or height/width)")
        else:
            mode, to = "none", 0
        crop = None
        if d.get("do_center_crop", False):
            cs = _size_dict(d.get("crop_size", d["size"]), True)
            crop = (cs["height"], cs["width"])
        rescale = float(d.get("rescale_factor", 1 / 255)) if d.get("do_rescale", True) else 1.0
        if d.get("do_normalize", True):
            mean = tuple(float(x) for x in _triple(d["image_mean"]))
            std = tuple(float(x) for x in _triple(d["image_std"]))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(resize_mode=mode, resize_to=to, crop=crop, mean=mean, std=std,  # type: ignore[arg-type]
                   rescale=rescale, resample=int(d.get("resample", 3)))

    @classmethod
    def from_model_dir(cls, path: str | Path, arch: str, fallback: "ImagePipeline | None" = None) -> "ImagePipeline":
        cfg = image_processor_config(Path(path))
        if cfg is not None:
            return cls.from_processor_config(cfg, arch)
        if fallback is not None:
            return fallback
        return cls.from_processor_config({}, arch)

    @classmethod
    def from_preset(cls, preset: Any) -> "ImagePipeline":
        s = preset.image_size
        return cls(
            resize_mode=preset.resize,
            resize_to=s if preset.resize == "shortest_edge" else (s, s),
            crop=(s, s) if preset.crop else None,
            mean=tuple(preset.mean), std=tuple(preset.std),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"resize_mode": self.resize_mode, "resize_to": self.resize_to, "crop": self.crop,
                "mean": list(self.mean), "std": list(self.std), "rescale": self.rescale, "resample": self.resample}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImagePipeline":
        to = d["resize_to"]
        return cls(resize_mode=d["resize_mode"], resize_to=tuple(to) if isinstance(to, list) else to,
                   crop=tuple(d["crop"]) if d.get("crop") else None, mean=tuple(d["mean"]), std=tuple(d["std"]),
                   rescale=float(d["rescale"]), resample=int(d["resample"]))

    # ------------------------------------------------------------------------------------------ running

    def resize(self, img: Image.Image) -> Image.Image:
        if self.resize_mode == "none":
            return img
        if self.resize_mode == "exact":
            h, w = self.resize_to  # type: ignore[misc]
        else:
            s = int(self.resize_to)  # type: ignore[arg-type]
            W, H = img.size
            short, long = (W, H) if W <= H else (H, W)
            new_long = int(s * long / short)
            h, w = (new_long, s) if W <= H else (s, new_long)
        if (w, h) == img.size:
            return img.copy() if img.mode == "RGB" else img
        return img.resize((w, h), resample=self.resample, reducing_gap=None)

    @cached_property
    def _table(self) -> np.ndarray:
        """(3, 256) float32: steps 4 and 5 for every uint8 value of each channel, computed with the
        reference's own arithmetic (float64 rescale, float32 cast, float32 normalise), so looking a
        pixel up gives the bitwise result of computing it."""
        x = (np.arange(256, dtype=np.float64) * self.rescale).astype(np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None]
        return ((x[None, :] - mean) / std).astype(np.float32)

    def one(self, img: Image.Image) -> np.ndarray:
        """(3, H, W) float32 for one image."""
        if img.mode != "RGB":
            img = to_rgb(img)
        arr = np.asarray(self.resize(img))  # (H, W, 3) uint8
        if self.crop is not None:
            arr = _center_crop(arr, self.crop)
        # Rescale + normalise + channels-first in one pass per channel: a table lookup, 7x cheaper than
        # the arithmetic on a 224x224 image (it runs on the loader threads, beside the encoder).
        out = np.empty((3,) + arr.shape[:2], dtype=np.float32)
        for c in range(3):
            np.take(self._table[c], arr[:, :, c], out=out[c])
        return out

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.one(im) for im in images]).astype(np.float32, copy=False)


def image_processor_config(path: Path) -> dict[str, Any] | None:
    """A model directory's image processor settings, found where transformers looks, in its order: the
    ``"image_processor"`` section of ``processor_config.json`` (what transformers 5's ``save_pretrained``
    of a processor writes), else ``preprocessor_config.json`` (the hub's and transformers 4's file).
    None when the directory has neither."""
    proc = path / "processor_config.json"
    if proc.is_file():
        nested = _read_json(proc).get("image_processor")
        if isinstance(nested, dict):
            return nested
    pre = path / "preprocessor_config.json"
    return _read_json(pre) if pre.is_file() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ModelUnavailable(f"{path} is not a JSON object")
    return data


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (transformers' ``convert_to_rgb``)."""
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _triple(v: Any) -> list[float]:
    if isinstance(v, (int, float)):
        return [float(v)] * 3
    v = list(v)
    if len(v) != 3:
        raise ValueError(f"expected 3 channel values, got {v!r}")
    return v


def _center_crop(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    H, W = arr.shape[:2]
    ch, cw = size
    top, left = (H - ch) // 2, (W - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= H and left + cw <= W:
        return arr[top : top + ch, left : left + cw]
    # pad with zeros around the centre, then crop (transformers' center_crop)
    nh, nw = max(ch, H), max(cw, W)
    out = np.zeros((nh, nw) + arr.shape[2:], dtype=arr.dtype)
    tp, lp = ceil((nh - H) / 2), ceil((nw - W) / 2)
    out[tp : tp + H, lp : lp + W] = arr
    top, left = top + tp, left + lp
    return out[max(0, top) : min(nh, top + ch), max(0, left) : min(nw, left + cw)]


__all__ = ["ARCH_PROCESSOR_DEFAULTS", "ImagePipeline", "image_processor_config"]
