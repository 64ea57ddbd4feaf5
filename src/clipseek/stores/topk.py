"""The top-k cut shared by the stores' exact scans and the local store's graph search."""

from __future__ import annotations

import numpy as np


def top_candidates(
    keys: np.ndarray, scores: np.ndarray, limit: int, min_cosine: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The (keys, scores) that may make the top ``limit`` by score: those at or above
    ``min_cosine``, cut at the ``limit``-th best score with every candidate tied at the cut kept,
    so the caller's final sort (score descending, id ascending) decides ties by id."""
    if limit <= 0 or len(keys) == 0:
        return keys[:0], scores[:0]
    if min_cosine is not None:
        keep = scores >= min_cosine
        keys, scores = keys[keep], scores[keep]
    if len(keys) > limit:
        part = np.argpartition(-scores, limit - 1)[:limit]
        keep = scores >= scores[part].min()
        keys, scores = keys[keep], scores[keep]
    return keys, scores
