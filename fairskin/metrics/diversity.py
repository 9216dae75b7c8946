"""Diversity of a set of embeddings (e.g. CLIP image embeddings of one generated stratum)."""

from __future__ import annotations

import numpy as np


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of 1 - cos(e_i, e_j) over all unordered pairs i < j of the rows.

    0 means every embedding points the same way (mode collapse); 1 means orthogonal on average.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] == 0:
        raise ValueError(f"embeddings must be a (n, dim) array, got shape {e.shape}")
    n = e.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 embeddings to form a pair, got {n}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(e, axis=1)
    zero_rows = np.flatnonzero(norms == 0)
    if zero_rows.size:
        raise ValueError(f"cosine distance is undefined for zero vectors (rows {zero_rows[:10]})")
    unit = e / norms[:, None]
    # sum over all ordered pairs (i, j) of u_i.u_j is ||sum_i u_i||^2, so the pairwise sum
    # needs O(n * dim) work and memory instead of an n x n Gram matrix.
    total = unit.sum(axis=0)
    self_terms = np.einsum("ij,ij->", unit, unit)
    mean_cosine = (total @ total - self_terms) / (n * (n - 1))
    # The exact value lies in [0, 2]; rounding can step just outside for (anti)parallel sets.
    return float(np.clip(1.0 - mean_cosine, 0.0, 2.0))
