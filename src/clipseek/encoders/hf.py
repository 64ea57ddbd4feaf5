"""CLIP-family encoders (CLIP, Chinese-CLIP, SigLIP) from a preset, a hub id or a local directory.

``--model`` accepts:

- a preset name (``clip-vit-b32``, ``chinese-clip-vit-b16``, ``siglip-b16-256-multilingual``; see
  :mod:`.presets`): looked up in ``$CLIPSEEK_HOME/models/<name>``, then the Hugging Face cache, then
  downloaded when the hub answers (see :mod:`clipseek.modelfiles`);
- a hub id (``org/name``) of any CLIP, Chinese-CLIP or SigLIP checkpoint: same lookup;
- a directory holding ``config.json`` + weights + tokenizer (``save_pretrained`` layout: the image
  settings in ``preprocessor_config.json``, or nested in transformers 5's ``processor_config.json``),
  and/or an ONNX export made by ``clipseek model export``.

Two runtimes, one vector space:

- **torch** (the reference): transformers' ``get_image_features`` / ``get_text_features``. transformers 5
  returns an output object whose ``pooler_output`` is the projected embedding; 4.x returns the tensor;
  both are handled.
- **onnx**: ONNX Runtime on the exported towers (``onnx/image.onnx``, ``onnx/text.onnx``, or the
  ``.int8.onnx`` pair). No torch is imported at query time. Chosen automatically when the directory has
  an export (``runtime="auto"``); force one with ``CLIPSEEK_RUNTIME=torch|onnx|onnx-int8``.

Image preprocessing is clipseek's own PIL+numpy pipeline (:mod:`.preprocess`), identical to
transformers' PIL image processors, so both runtimes get the same pixels.

Identity: ``spec`` reopens the encoder (preset name, hub id or absolute directory path); ``model_id``
is the hub id when known; ``version`` is a fingerprint of the weight files (stable across processes and
copies) with ``-int8`` appended for the quantised runtime (its vectors differ from fp32 by ~1e-2, so a
collection built with one is not silently queried with the other). Constructing an encoder is cheap:
files are located on the first ``info``/``version`` access and weights load on the first embed.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelUnavailable
from .base import Calibration, Encoder
from .preprocess import ImagePipeline
from .presets import ARCH_DEFAULTS, EN_TEMPLATES, PRESETS, ZH_TEMPLATES, Preset, get_preset, preset_for_hub_id

PREPROCESS_VERSION = "p1"  # bump when clipseek's preprocessing changes the pixels a model sees
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def features(out: Any) -> Any:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4.x) or an output object
    whose ``pooler_output`` holds it (transformers 5.x)."""
    if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
        return out.pooler_output
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def text_settings(path: Path, arch: str, preset: Preset | None) -> dict[str, Any]:
    """max_length and padding for a model directory: the preset's values, capped by the model's positions."""
    base = preset or PRESETS[ARCH_DEFAULTS.get(arch, "clip-vit-b32")]
    max_len = base.max_length
    cfgf = path / "config.json"
    if cfgf.is_file():
        cfg = json.loads(cfgf.read_text())
        pos = (cfg.get("text_config") or {}).get("max_position_embeddings")
        if pos:
            max_len = min(max_len, int(pos))
    return {"max_length": max_len, "pad_to_max_length": base.pad_to_max_length}


class TorchBackend:
    """transformers + torch: the reference runtime."""

    kind = "torch"

    def __init__(self, path: Path, arch: str, text: dict[str, Any]) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise ModelUnavailable(f"the torch runtime needs torch and transformers ({e}); pip install 'clipseek[clip]'") from None
        self.torch = torch
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar on every query process
        except ImportError:  # pragma: no cover
            pass
        try:
            self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"cannot load the model in {path}: {e}") from None
        self.text = text
        self.input_names = [n for n in self.tokenizer.model_input_names if n in ("input_ids", "attention_mask", "token_type_ids")]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        enc = self.tokenizer(
            list(texts),
            padding="max_length" if self.text["pad_to_max_length"] else True,
            truncation=True,
            max_length=self.text["max_length"],
            return_tensors="pt",
        )
        return {k: v for k, v in enc.items() if k in self.input_names}

    def images(self, pixel_values: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model.get_image_features(pixel_values=self.torch.from_numpy(pixel_values))
        return features(out).float().numpy()

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model.get_text_features(**self.tokenize(texts))
        return features(out).float().numpy()

    def logit_params(self) -> tuple[float, float | None]:
        scale = float(self.model.logit_scale.detach().exp())
        bias = getattr(self.model, "logit_bias", None)
        return scale, (float(bias.detach()) if bias is not None else None)


class HFClipEncoder(Encoder):
    """A CLIP, Chinese-CLIP or SigLIP model; see the module docstring."""

    name = "clip"
    batch_size = 16

    def __init__(self, model: str | Path = "clip-vit-b32", *, runtime: str | None = None,
                 allow_download: bool = True, batch_size: int | None = None) -> None:
        from .. import modelfiles as mf

        source = str(model)
        self._runtime_req = (runtime or os.environ.get("CLIPSEEK_RUNTIME") or "auto").strip().lower()
        if self._runtime_req not in RUNTIMES:
            raise ModelUnavailable(f"unknown runtime {self._runtime_req!r}; use one of {', '.join(RUNTIMES)}")
        self._allow_download = allow_download
        if batch_size:
            self.batch_size = batch_size
        self._md: Any = None
        self._backend: Any = None
        self._pipeline: ImagePipeline | None = None
        self._lock = threading.Lock()
        self._logit: tuple[float, float | None] | None = None
        self._preset: Preset | None
        preset = get_preset(source)
        if preset is not None:
            self._kind, self._spec, self._preset = "preset", preset.name, preset
        elif mf.looks_like_path(source):
            md = mf.check_model_dir(source)
            self._kind, self._spec, self._md = "dir", str(md.path), md
            hub = md.hub_id
            self._preset = (get_preset(md.marker.get("preset") or "") or (preset_for_hub_id(hub) if hub else None))
        elif mf.looks_like_hub_id(source):
            self._kind, self._spec, self._preset = "hub", source, preset_for_hub_id(source)
        else:
            raise mf.unknown_model(source)

    # ---------------------------------------------------------------------------------- identity

    @classmethod
    def from_spec(cls, spec: str) -> "HFClipEncoder | None":
        from .. import modelfiles as mf

        if get_preset(spec) or mf.looks_like_path(spec) or mf.looks_like_hub_id(spec):
            return cls(spec)
        # a near-miss of a preset name is an unknown preset, not somebody else's model
        import difflib

        if difflib.get_close_matches(spec, list(PRESETS), n=1, cutoff=0.75):
            raise mf.unknown_model(spec)
        return None

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def preset(self) -> Preset | None:
        return self._preset

    @property
    def model_dir(self) -> Path:
        return self._resolve().path

    def _resolve(self) -> Any:
        """The checked local directory (located or downloaded on first use)."""
        if self._md is None:
            from .. import modelfiles as mf

            path = mf.locate(self._spec, allow_download=self._allow_download)
            self._md = mf.check_model_dir(path)
        return self._md

    @property
    def arch(self) -> str:
        if self._md is None and self._preset is not None:
            return self._preset.arch
        return self._resolve().arch or "clip"

    @property
    def model_id(self) -> str:  # type: ignore[override]
        if self._kind == "preset":
            return self._preset.hub_id  # type: ignore[union-attr]
        if self._kind == "hub":
            return self._spec
        return self._resolve().hub_id or self._spec

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._md is None and self._preset is not None:
            return self._preset.dim
        md = self._resolve()
        if md.onnx and md.onnx.get("dim"):
            return int(md.onnx["dim"])
        cfg = json.loads((md.path / "config.json").read_text())
        if md.arch == "siglip":
            t = cfg.get("text_config") or {}
            return int(t.get("projection_size") or t.get("hidden_size") or 768)
        return int(cfg.get("projection_dim") or 512)

    @property
    def info(self) -> Any:  # type: ignore[override]
        self._resolve()  # locate (or download) first, so dim and version come from the files
        return super().info

    def runtime(self) -> str:
        """The runtime this encoder uses: torch, onnx or onnx-int8."""
        md = self._resolve()
        req = self._runtime_req
        if req == "auto":
            if md.onnx:
                int8 = md.onnx.get("int8") or {}
                if md.onnx.get("default") == "int8" and int8.get("image") and (md.path / "onnx" / int8["image"]).is_file():
                    return "onnx-int8"
                return "onnx"
            return "torch"
        if req.startswith("onnx") and not md.onnx:
            raise ModelUnavailable(f"{md.path} has no ONNX export; run `clipseek model export {md.path}`")
        if req == "onnx-int8" and not (md.onnx.get("int8") or {}).get("image"):
            raise ModelUnavailable(f"{md.path} has no int8 export; run `clipseek model export {md.path} --int8`")
        if req == "torch" and not md.torch_weights:
            raise ModelUnavailable(f"{md.path} has no torch weights (model.safetensors or pytorch_model.bin)")
        return req

    @property
    def version(self) -> str:  # type: ignore[override]
        from ..modelfiles import fingerprint

        v = f"{fingerprint(self._resolve().path)}-{PREPROCESS_VERSION}"
        return v + "-int8" if self.runtime() == "onnx-int8" else v

    # ---------------------------------------------------------------------------------- scores & prompts

    @property
    def templates(self) -> dict[str, tuple[str, ...]]:
        p = self._preset or PRESETS[ARCH_DEFAULTS.get(self.arch, "clip-vit-b32")]
        return p.templates or {"en": EN_TEMPLATES, "zh": ZH_TEMPLATES}

    @property
    def languages(self) -> tuple[str, ...]:
        p = self._preset or PRESETS[ARCH_DEFAULTS.get(self.arch, "clip-vit-b32")]
        return p.languages

    @property
    def max_text_tokens(self) -> int:  # type: ignore[override]
        p = self._preset or PRESETS[ARCH_DEFAULTS.get(self.arch, "clip-vit-b32")]
        return p.max_length

    def logit_params(self) -> tuple[float, float | None]:
        """(exp(logit_scale), logit_bias or None) from the model's own weights."""
        if self._logit is None:
            self._logit = self._read_logit_params()
        return self._logit

    def _read_logit_params(self) -> tuple[float, float | None]:
        md = self._resolve()
        if md.onnx and md.onnx.get("logit_scale"):
            return float(md.onnx["logit_scale"]), md.onnx.get("logit_bias")
        st = md.path / "model.safetensors"
        if st.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(st), framework="np") as f:
                    keys = set(f.keys())
                    scale = math.exp(float(np.asarray(f.get_tensor("logit_scale")).reshape(-1)[0]))
                    bias = float(np.asarray(f.get_tensor("logit_bias")).reshape(-1)[0]) if "logit_bias" in keys else None
                    return scale, bias
            except Exception:  # noqa: BLE001 - fall through to loading the model
                pass
        backend = self._load()
        if hasattr(backend, "logit_params"):
            return backend.logit_params()
        return 100.0, None

    @property
    def logit_scale(self) -> float:
        return self.logit_params()[0]

    @property
    def calibration(self) -> dict[str, Calibration]:  # type: ignore[override]
        p = self._preset or PRESETS[ARCH_DEFAULTS.get(self.arch, "clip-vit-b32")]
        cal = dict(p.calibration)
        if self.arch == "siglip":
            try:
                scale, bias = self.logit_params()
            except ModelUnavailable:
                scale, bias = 0.0, None
            if bias is not None and scale >= 10:
                # SigLIP's own P(match) = sigmoid(scale * cos + bias); a trained model has scale ~100
                # (a freshly initialised one has 1: then the preset's fallback is kept)
                cal["text"] = Calibration(center=-bias / scale, scale=1.0 / scale)
        return cal

    # ---------------------------------------------------------------------------------- running

    @property
    def pipeline(self) -> ImagePipeline:
        md = self._resolve()
        if md.onnx and md.onnx.get("preprocess"):
            return ImagePipeline.from_dict(md.onnx["preprocess"])
        fallback = ImagePipeline.from_preset(self._preset) if self._preset else None
        return ImagePipeline.from_model_dir(md.path, md.arch or "clip", fallback)

    def _load(self) -> Any:
        with self._lock:
            if self._backend is None:
                md = self._resolve()
                rt = self.runtime()
                if rt == "torch":
                    self._backend = TorchBackend(md.path, md.arch or "clip", text_settings(md.path, md.arch or "clip", self._preset))
                else:
                    from .onnx_runtime import OnnxBackend

                    self._backend = OnnxBackend(md.path, md.onnx, int8=(rt == "onnx-int8"))
            return self._backend

    def _image_pipeline(self) -> ImagePipeline:
        """The pipeline, read once; the loader threads call this before the backend exists."""
        pipe = self._pipeline
        if pipe is None:
            with self._lock:
                if self._pipeline is None:
                    self._pipeline = self.pipeline
                pipe = self._pipeline
        return pipe

    @property
    def draft_side(self) -> int | None:  # type: ignore[override]
        """The model input's side: the loader decodes a JPEG at a reduced DCT scale (``Image.draft``)
        down to it, never below. Decoding a 0.7 MP photo then costs about half and resizing it a third
        of what they cost at 448, for a cosine to the full-size decode of at least 0.9998 on the sample
        photos (benchmarks/README.md, "Ingest"); at 448 the decoder, not the int8 model, limited ingest."""
        pipe = self._image_pipeline()
        if pipe.resize_mode == "shortest_edge":
            return int(pipe.resize_to)  # type: ignore[arg-type]
        if pipe.resize_mode == "exact":
            return max(pipe.resize_to)  # type: ignore[arg-type]
        return None

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self._image_pipeline().one(image)

    def _embed_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        backend = self._load()
        return backend.images(np.stack(prepared).astype(np.float32, copy=False))

    def _embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._embed_prepared([self.prepare(im) for im in images])

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._load().texts(texts)

    def close(self) -> None:
        self._backend = None


__all__ = ["HFClipEncoder", "PREPROCESS_VERSION", "TorchBackend", "features", "text_settings"]
