"""Plain data passed between the seams (Source -> loader -> Encoder -> VectorStore -> search).

Invariants (see ARCHITECTURE.md):
- every vector is a 1-D or 2-D ``numpy.float32`` array, L2-normalised along its last axis;
- ``Hit.cosine`` is the raw cosine similarity (dot product of unit vectors, in [-1, 1]);
- ``Hit.score`` is the calibrated relevance in [0, 1] (see :class:`clipseek.encoders.base.Calibration`); a store fills
  it with the cosine and the engine replaces it;
- ids are non-empty strings, stable across re-indexing of the same source item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Metadata = dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One stored item: an id, its unit vector and its metadata."""

    id: str
    vector: np.ndarray
    metadata: Metadata = field(default_factory=dict)


@dataclass
class Hit:
    """One search result."""

    id: str
    cosine: float
    metadata: Metadata
    score: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(float(self.score), 6),
            "cosine": round(float(self.cosine), 6),
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ImageRef:
    """An image a Source has found but nobody has opened yet.

    Exactly one of ``path``, ``url`` or ``data`` says where the bytes are. ``fingerprint`` is a
    cheap change detector (for files: size and mtime) that lets a re-run skip unchanged items
    without reading them.
    """

    id: str
    path: Path | None = None
    url: str | None = None
    data: bytes | None = None
    metadata: Metadata = field(default_factory=dict)
    fingerprint: str | None = None


@dataclass(frozen=True)
class EncoderInfo:
    """What a collection remembers about the encoder that filled it."""

    name: str
    model_id: str
    dim: int
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.model_id, "dim": self.dim, "version": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderInfo:
        return cls(name=d["name"], model_id=d["model_id"], dim=int(d["dim"]), version=str(d["version"]))


def as_unit_vectors(x: Any, dim: int | None = None) -> np.ndarray:
    """Return ``x`` as a 2-D float32 array of unit rows, or raise BadVector.

    Used at every seam where vectors come in from outside (queries, store upserts), so a wrong
    dimension or a NaN is refused with a clear message instead of silently ranking garbage.
    """
    from .errors import BadVector

    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadVector(f"not a numeric vector: {e}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise BadVector(f"expected a vector or a 2-D array of vectors, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise BadVector(f"wrong vector dimension: got {arr.shape[1]}, the collection holds {dim}-d vectors")
    if not np.all(np.isfinite(arr)):
        raise BadVector("vector contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise BadVector("zero vector: it has no direction to compare")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)
