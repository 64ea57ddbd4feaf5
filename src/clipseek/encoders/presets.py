"""Named CLIP-family models (``--model clip-vit-b32``) and what each needs: weights, preprocessing,
tokenizer, prompt templates and score calibration.

A preset is a default, not the authority: when a model directory holds its own
``preprocessor_config.json`` / tokenizer files, those win (see :mod:`clipseek.encoders.preprocess`).
The preset values below are what the published checkpoints use, so a preset can be described (and
its dimension known) before anything is downloaded.

Calibration (``Calibration(center, scale)``: a raw cosine equal to ``center`` scores 0.5).
**None of these numbers was measured here**: CLIP weights cannot be downloaded on the machines this
was built on. They come from published figures and peers' reports:

- OpenAI CLIP ViT-B/32, text->image: a matching caption/photo pair typically has a cosine of about
  0.25-0.35, an unrelated pair about 0.10-0.20 (Radford et al. 2021 use logit scale 100, so a 0.1
  cosine gap is a 10-logit gap; CLIPScore, Hessel et al. 2021, rescales cosine with w=2.5 because raw
  values cluster around 0.2-0.4; the same ranges are reported by clip-retrieval and rclip users).
  Centre 0.24 (between the two ranges), scale 0.02 (0.20 -> 0.12, 0.30 -> 0.95).
- Image->image with CLIP-family image towers: near duplicates (re-encodes, crops, resizes) score
  above 0.9; the same object/scene in different photos about 0.75-0.9; unrelated photos about
  0.4-0.6 (CLIP image embeddings share a large common component, so unrelated images are far from 0).
  Centre 0.80, scale 0.04 (0.60 -> 0.007, 0.90 -> 0.92).
- Chinese-CLIP ViT-B/16 (trained like CLIP with a learned softmax temperature that ends near 100):
  reported matching pairs are a little higher than OpenAI CLIP's, about 0.3-0.45, unrelated
  0.1-0.25. Centre 0.28, scale 0.03. An estimate: re-check on real data (see below).
- SigLIP (sigmoid loss) is the one family whose own weights say where "a match" is:
  ``P(match) = sigmoid(logit_scale.exp() * cosine + logit_bias)``, so ``center = -bias/scale`` and
  ``scale = 1/scale``. The encoder computes this from the loaded weights. The preset fallback assumes the published SigLIP B/16 values (temperature
  about 117, bias about -12.9 -> centre 0.11, scale 0.0085); matching pairs then sit around
  0.1-0.2 raw cosine, which is why a raw "60 %" threshold is meaningless for SigLIP.

How to re-calibrate on real weights: embed a few hundred captioned photos, take the cosine of the true
pairs and of random pairs, and put ``center`` where the two histograms cross and ``scale`` at about a
quarter of the gap between their medians. ``benchmarks/`` is the place for such a script once
weights are available.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Calibration
from .preprocess import OPENAI_MEAN, OPENAI_STD

EN_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
)
ZH_TEMPLATES = (
    "一张{}的照片。",
    "一张{}的图片。",
    "{}的特写照片。",
    "这是一张{}的照片。",
    "一张清晰的{}的照片。",
)

IMAGE_CALIBRATION = Calibration(center=0.80, scale=0.04)


@dataclass(frozen=True)
class Preset:
    """What clipseek knows about one published checkpoint."""

    name: str
    hub_id: str
    arch: str  # "clip" | "chinese_clip" | "siglip" (transformers model_type)
    dim: int
    description: str
    # image pipeline (defaults; a model directory's preprocessor_config.json wins)
    image_size: int
    resize: str  # "shortest_edge": keep aspect, then centre crop | "exact": squash to image_size^2
    crop: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"
    # text
    tokenizer: str = "clip-bpe"  # "clip-bpe" | "bert-wordpiece" | "sentencepiece"
    max_length: int = 77
    pad_to_max_length: bool = False
    languages: tuple[str, ...] = ("en",)
    templates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # scores
    calibration: dict[str, Calibration] = field(default_factory=dict)
    calibration_source: str = ""
    # files
    weights: tuple[str, ...] = ("model.safetensors",)
    approx_mb: int = 0
    quality: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "hub_id": self.hub_id,
            "arch": self.arch,
            "dim": self.dim,
            "description": self.description,
            "image": {"size": self.image_size, "resize": self.resize, "crop": self.crop, "mean": list(self.mean),
                      "std": list(self.std), "resample": self.resample},
            "text": {"tokenizer": self.tokenizer, "max_length": self.max_length,
                     "pad_to_max_length": self.pad_to_max_length, "languages": list(self.languages)},
            "templates": {k: list(v) for k, v in self.templates.items()},
            "calibration": {k: {"center": c.center, "scale": c.scale} for k, c in self.calibration.items()},
            "calibration_source": self.calibration_source,
            "approx_mb": self.approx_mb,
            "quality": self.quality,
        }


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="clip-vit-b32",
            hub_id="openai/clip-vit-base-patch32",
            arch="clip",
            dim=512,
            description="OpenAI CLIP ViT-B/32 (the seed's model): English queries, fastest",
            image_size=224, resize="shortest_edge", crop=True, mean=OPENAI_MEAN, std=OPENAI_STD,
            tokenizer="clip-bpe", max_length=77, pad_to_max_length=False,
            languages=("en",),
            templates={"en": EN_TEMPLATES},
            calibration={"text": Calibration(0.24, 0.02), "image": IMAGE_CALIBRATION},
            calibration_source="literature/peer reports (not measured here)",
            weights=("model.safetensors",),
            approx_mb=605,
            quality="zero-shot text->image R@1: Flickr30k 58.8, COCO 30.4; under 4% R@1 on Chinese queries",
        ),
        Preset(
            name="chinese-clip-vit-b16",
            hub_id="OFA-Sys/chinese-clip-vit-base-patch16",
            arch="chinese_clip",
            dim=512,
            description="Chinese-CLIP ViT-B/16 + RoBERTa-wwm: Chinese-first queries",
            # The original Chinese-CLIP transform is Resize((224, 224), BICUBIC) without a crop; the hub's
            # preprocessor_config.json is believed to match (do_center_crop false, 224x224), but that file
            # could not be read from here: a downloaded directory's own file is always used instead.
            image_size=224, resize="exact", crop=False, mean=OPENAI_MEAN, std=OPENAI_STD,
            tokenizer="bert-wordpiece", max_length=52, pad_to_max_length=False,
            languages=("zh", "en"),
            templates={"zh": ZH_TEMPLATES, "en": EN_TEMPLATES},
            calibration={"text": Calibration(0.28, 0.03), "image": IMAGE_CALIBRATION},
            calibration_source="estimate from published/peer figures (not measured here)",
            weights=("pytorch_model.bin",),
            approx_mb=750,
            quality="zero-shot text->image R@1: Flickr30K-CN 62.7 (official test set; 71.2 is ViT-H/14), COCO-CN 62.2",
        ),
        Preset(
            name="siglip-b16-256-multilingual",
            hub_id="google/siglip-base-patch16-256-multilingual",
            arch="siglip",
            dim=768,
            description="SigLIP B/16 256px multilingual (WebLI, no language filter): Chinese and English",
            image_size=256, resize="exact", crop=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            tokenizer="sentencepiece", max_length=64, pad_to_max_length=True,
            languages=("zh", "en"),
            templates={"zh": ZH_TEMPLATES, "en": EN_TEMPLATES},
            calibration={"text": Calibration(0.11, 0.0085), "image": IMAGE_CALIBRATION},
            calibration_source="SigLIP's own logit scale and bias when loaded; fallback: published B/16 values",
            weights=("model.safetensors",),
            approx_mb=1480,
            quality="SigLIP B/16 (English) zero-shot text->image R@1 74.7 / 47.8; multilingual variant covers 100+ languages",
        ),
    ]
}

DEFAULT_PRESET = "clip-vit-b32"
# Tried in this order when looking for a locally available preset for a new collection.
DEFAULT_ORDER = ("clip-vit-b32", "chinese-clip-vit-b16", "siglip-b16-256-multilingual")

# transformers model_type -> preset used for defaults when a directory does not name a preset
ARCH_DEFAULTS = {"clip": "clip-vit-b32", "chinese_clip": "chinese-clip-vit-b16", "siglip": "siglip-b16-256-multilingual"}


def get_preset(name: str) -> Preset | None:
    return PRESETS.get(name)


def preset_for_hub_id(hub_id: str) -> Preset | None:
    for p in PRESETS.values():
        if p.hub_id.lower() == hub_id.lower():
            return p
    return None


__all__ = ["ARCH_DEFAULTS", "DEFAULT_ORDER", "DEFAULT_PRESET", "EN_TEMPLATES", "PRESETS", "Preset", "ZH_TEMPLATES",
           "get_preset", "preset_for_hub_id"]
