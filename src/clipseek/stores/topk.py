"""Scoring and the top-k cut shared by the stores' exact scans and the local store's graph search."""

from __future__ import annotations

import numpy as np

#: Scans of at most this many multiply-adds run on the calling thread (``np.einsum``). BLAS would
#: split them over its worker threads, and waking those right after an encoder's own threads ran
#: on the same cores cost 1.6-18 ms on a 2-core machine, against 0.2-0.4 ms for the whole scan
#: (benchmarks/README.md, "Cold start"). Larger scans are worth BLAS's threads.
SINGLE_THREAD_SCAN = 1 << 24


def cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` for unit rows and a unit query: the cosine of every row."""
    if vectors.shape[0] * vectors.shape[1] <= SINGLE_THREAD_SCAN:
        return np.einsum("nd,d->n", vectors, query)
    return vectors @ query


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
