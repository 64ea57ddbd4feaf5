"""Zero-shot labels, as the CLIP paper does them.

For each candidate label, every prompt template (``"a photo of a {}."``, ``"一张{}的照片。"`` ...) is
embedded; the label's classifier vector is the mean of those unit vectors, renormalised (prompt
ensembling, Radford et al. 2021 sec. 3.1.4). An image's logits are ``logit_scale * cosine`` with the
model's own learned logit scale (``exp(logit_scale)``, about 100 for CLIP), and the probabilities are a
softmax over the candidate labels. Probabilities are relative to the labels given: they sum to 1 even
when no label fits, so report them with the raw cosine when that matters.

Templates: ``templates`` wins; else the model's templates (``encoder.templates``, per language) for
``lang``; with ``lang=None`` a label containing Chinese characters gets the Chinese templates when the
model reads Chinese, any other label the English ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .encoders.base import Encoder
from .encoders.presets import EN_TEMPLATES, ZH_TEMPLATES
from .errors import ClipseekError
from .types import as_unit_vectors

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
DEFAULT_LOGIT_SCALE = 100.0


def logit_scale(encoder: Encoder) -> float:
    s = getattr(encoder, "logit_scale", None)
    try:
        return float(s) if s else DEFAULT_LOGIT_SCALE
    except (TypeError, ValueError):
        return DEFAULT_LOGIT_SCALE


def templates_for(encoder: Encoder, label: str, templates: Sequence[str] | None = None, lang: str | None = None) -> list[str]:
    if templates:
        return list(templates)
    table: dict[str, Sequence[str]] = dict(getattr(encoder, "templates", None) or {"en": EN_TEMPLATES, "zh": ZH_TEMPLATES})
    if lang is None:
        lang = "zh" if _CJK.search(label) and "zh" in table else "en"
    return list(table.get(lang) or table.get("en") or next(iter(table.values())))


def label_vectors(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] | None = None,
                  lang: str | None = None) -> np.ndarray:
    """(len(labels), dim) unit classifier vectors, one per label (prompt ensemble)."""
    labels = [str(x).strip() for x in labels]
    if not labels or any(not x for x in labels):
        raise ClipseekError("give at least one non-empty label")
    if len(set(labels)) != len(labels):
        raise ClipseekError("labels must be distinct")
    prompts: list[str] = []
    owner: list[int] = []
    for i, lab in enumerate(labels):
        for t in templates_for(encoder, lab, templates, lang):
            prompts.append(t.format(lab) if "{}" in t else f"{t} {lab}")
            owner.append(i)
    vecs = encoder.embed_texts(prompts)
    out = np.zeros((len(labels), vecs.shape[1]), dtype=np.float64)
    np.add.at(out, np.asarray(owner), vecs.astype(np.float64))
    return as_unit_vectors(out)


def _image_vectors(encoder: Encoder, items: Any) -> np.ndarray:
    if isinstance(items, np.ndarray):
        return as_unit_vectors(items, encoder.dim or None)
    items = list(items)
    if items and all(isinstance(x, np.ndarray) for x in items):
        return as_unit_vectors(np.stack(items), encoder.dim or None)
    from PIL import Image

    from .images import load_image

    imgs = [x if isinstance(x, Image.Image) else load_image(Path(x)) for x in items]
    return encoder.embed_images(imgs)


def classify(encoder: Encoder, images_or_vectors: Any, labels: Sequence[str], templates: Sequence[str] | None = None,
             lang: str | None = None) -> np.ndarray:
    """Probabilities ``(n_images, n_labels)`` (rows sum to 1) for images (PIL images or paths) or their
    unit vectors, over ``labels``."""
    v = _image_vectors(encoder, images_or_vectors)
    w = label_vectors(encoder, labels, templates, lang)
    logits = logit_scale(encoder) * (v.astype(np.float64) @ w.T.astype(np.float64))
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def top_labels(probs: np.ndarray, labels: Sequence[str], k: int = 1, min_prob: float = 0.0) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` most probable labels with their probabilities (those >= ``min_prob``)."""
    out = []
    for row in np.asarray(probs):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(labels[i], float(row[i])) for i in order if row[i] >= min_prob])
    return out


def label_metadata(encoder: Encoder, vectors: np.ndarray, labels: Sequence[str], k: int = 1,
                   min_prob: float = 0.0, classifier: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Metadata to store while indexing with ``--labels``: ``{"labels": [...], "label_probs": {...}}`` per
    vector. Pass ``classifier`` (from :func:`label_vectors`) to embed the prompts once for many batches."""
    w = classifier if classifier is not None else label_vectors(encoder, labels)
    logits = logit_scale(encoder) * (as_unit_vectors(vectors).astype(np.float64) @ w.T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return [{"labels": [lab for lab, _ in row], "label_probs": {lab: round(pr, 4) for lab, pr in row}}
            for row in top_labels(p, list(labels), k, min_prob)]


def parse_labels(text: str | Iterable[str]) -> list[str]:
    """``"cat,dog, 汽车"`` (commas, also the Chinese ``，`` and ``、``) -> ``["cat", "dog", "汽车"]``."""
    parts = re.split(r"[,，、]", text) if isinstance(text, str) else [str(x) for x in text]
    return [p.strip() for p in parts if p.strip()]


__all__ = ["classify", "label_metadata", "label_vectors", "logit_scale", "parse_labels", "templates_for", "top_labels"]
