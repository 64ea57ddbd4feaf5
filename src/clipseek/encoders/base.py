"""The Encoder seam.

An encoder maps images and texts into one vector space. Subclasses implement two methods that
take a batch and return an ``(n, dim)`` float32 array; the base class normalises, checks shapes and
batches, so every encoder keeps the invariant "unit float32 rows" without repeating the code.

An encoder may also split its image path in two (:meth:`Encoder.prepare`, run per image on the
ingest loader threads, and :meth:`Encoder._embed_prepared`, run per batch on the encoding thread),
so that resizing and normalising overlap the model instead of running between its calls.
``_embed_images`` must then equal ``_embed_prepared`` of the prepared images, bit for bit.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
from PIL import Image

from ..types import EncoderInfo, as_unit_vectors

#: Characters kept per token a model reads. A token spans at least one visible character, and a typical
#: one 3-5 (English) or 1-2 (Chinese), so 16 per token keeps every token the model can read while a pasted
#: book is tokenised in milliseconds instead of seconds.
CHARS_PER_TOKEN = 16


def cut_to_token_budget(text: str, max_tokens: int) -> str:
    """``text`` cut after ``max_tokens * CHARS_PER_TOKEN`` non-whitespace characters.

    Whitespace is not counted because tokenisers collapse it: a text padded with a million spaces
    still keeps its words.
    """
    budget = max_tokens * CHARS_PER_TOKEN
    if len(text) <= budget:
        return text
    m = re.match(r"(?:\s*\S){%d}" % budget, text)
    return m.group(0) if m else text


@dataclass(frozen=True)
class Calibration:
    """Maps a raw cosine to a relevance score in [0, 1] with a logistic curve.

    ``score = 1 / (1 + exp(-(cosine - center) / scale))``: a raw cosine equal to ``center`` scores
    0.5, which is meant as "probably a real match" for that model and query kind. The mapping is
    monotonic, so a score threshold is also a raw-cosine threshold (see :meth:`cosine_at`).
    """

    center: float
    scale: float

    def score(self, cosine: float | np.ndarray) -> float | np.ndarray:
        z = (np.asarray(cosine, dtype=np.float64) - self.center) / self.scale
        # exp(-z) overflows for z below about -709; at -60 the score is already 1e-26 from 0.
        # Large z needs no clip: exp(-z) underflows quietly to 0 and the score to 1.
        out = 1.0 / (1.0 + np.exp(-np.maximum(z, -60.0)))
        return float(out) if np.ndim(out) == 0 else out

    def cosine_at(self, score: float) -> float:
        """The raw cosine at which the calibrated score equals ``score`` (0 < score < 1)."""
        if score <= 0:
            return -1.0
        if score >= 1:
            return 1.0 + 1e-6
        return self.center + self.scale * math.log(score / (1.0 - score))


class Encoder(ABC):
    """Embeds images and texts into one space of ``dim`` dimensions.

    Attributes a subclass sets:
      name        the registry name (``clipseek --model NAME``)
      model_id    what weights it runs (a hub id, a path, or a package name)
      dim         vector size
      version     bump when the same weights would produce different vectors (preprocessing change),
                  so old collections are refused instead of silently mixing vector spaces
      calibration per query kind ("text": text->image, "image": image->image)
      image_side  the shorter side the loader may reduce images to right after decoding (never
                  below it); 448 is twice the 224 input of CLIP-family towers
      draft_side  the side a JPEG may be decoded down to by DCT scaling (None: ``image_side``); a
                  model that resizes to a fixed input can decode JPEGs at that input's side
      max_text_tokens
                  how many tokens of a text the model reads (None: unknown, texts are passed whole);
                  longer texts are cut to a character budget (:func:`cut_to_token_budget`) before
                  ``_embed_texts``, so they cost what their first tokens cost
    """

    name: ClassVar[str] = ""
    model_id: str = ""
    dim: int = 0
    version: str = "1"
    batch_size: int = 16
    image_side: int = 448
    draft_side: int | None = None
    max_text_tokens: int | None = None
    calibration: dict[str, Calibration] = {"text": Calibration(0.25, 0.05), "image": Calibration(0.8, 0.05)}

    @abstractmethod
    def _embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return raw (not necessarily normalised) vectors for a batch of RGB images."""

    @abstractmethod
    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return raw vectors for a batch of texts."""

    @classmethod
    def from_spec(cls, spec: str) -> "Encoder | None":
        """Build an encoder for a model spec that is not a registered name (a preset, a hub id,
        a local directory), or return None if this class does not handle it. Called by the
        registry for every registered class in turn; the default handles nothing."""
        return None

    @property
    def spec(self) -> str:
        """What to pass to the registry to get this encoder again (stored in collection.json)."""
        return self.name

    # ---------------------------------------------------------------- written once for every encoder

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(name=self.spec, model_id=self.model_id, dim=self.dim, version=self.version)

    def embed_images(self, images: Iterable[Image.Image]) -> np.ndarray:
        return self._batched(list(images), self._embed_images)

    def embed_texts(self, texts: Iterable[str]) -> np.ndarray:
        limit = self.max_text_tokens
        texts = [cut_to_token_budget(str(t), limit) if limit else str(t) for t in texts]
        return self._batched(texts, self._embed_texts)

    def prepare(self, image: Image.Image) -> Any:
        """Model-specific preprocessing of one decoded RGB image, run on the ingest loader threads
        (so it must be thread-safe); its result goes to :meth:`embed_prepared`. The default keeps the
        image as it is: ``_embed_images`` then does all the work on the encoding thread."""
        return image

    def _embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Raw vectors for a batch of :meth:`prepare` results (default: ``_embed_images``)."""
        return self._embed_images(prepared)

    def embed_prepared(self, prepared: Iterable[Any]) -> np.ndarray:
        """Unit vectors for :meth:`prepare` results: equal to ``embed_images`` of the images."""
        return self._batched(list(prepared), self._embed_prepared)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self.embed_images([image])[0]

    def load_image(self, source: str | Path | bytes, *, name: str | None = None, budget: Any = None) -> Image.Image:
        """Decode an image as this encoder reads it everywhere (index, Ray workers, image queries):
        reduced to ``image_side`` right after decoding, JPEGs at ``draft_side``. One place, so an
        indexed file searched as a query image gets the very same pixels (cosine 1 to itself)."""
        from ..images import load_image

        return load_image(source, name=name, fit=self.image_side, draft=self.draft_side, budget=budget)

    def embed_text(self, text: str) -> np.ndarray:
        return self.embed_texts([text])[0]

    def _batched(self, items: list, fn) -> np.ndarray:  # type: ignore[no-untyped-def]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [fn(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return as_unit_vectors(np.concatenate(parts, axis=0), self.dim)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release model resources (optional)."""
