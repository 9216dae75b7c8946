"""Embedding search for the memorization and near-duplicate checks.

Memorization: the nearest training images by embedding cosine are found with one matrix
product over a cached, normalised index; only those few go on to the expensive perceptual
comparison, so the check scales to the whole training set. Near-duplicates: cosine similarity
of a candidate's embedding to the images already accepted (earlier seeds) in its batch. It
depends on those earlier images, so it is not part of a candidate's score: `NearDuplicateCheck`
decides it when the stratum is decided (`plan.decide_stratum(is_duplicate=...)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    from fairskin.generation.scoring_config import ScoringConfig

DEFAULT_DUPLICATE_COSINE = 0.95


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding is the zero vector; it has no direction to compare")
    return cast("np.ndarray", vectors / norms)


class EmbeddingIndex:
    """Cosine nearest neighbours over a fixed set of embeddings (e.g. the training images)."""

    def __init__(self, embeddings: np.ndarray, ids: Sequence[object]) -> None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(ids) or not len(ids):
            raise ValueError("the index needs an (n, dim) array and n ids, n > 0")
        self.vectors = _normalise(embeddings)
        self.ids = list(ids)

    def nearest(self, queries: np.ndarray, k: int = 5) -> list[list[tuple[object, float]]]:
        """For each query, the k most similar ids with their cosine similarity, best first."""
        q = _normalise(np.atleast_2d(queries))
        similarity = q @ self.vectors.T
        k = min(k, len(self.ids))
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        results = []
        for row, candidates in zip(similarity, top, strict=True):
            ranked = sorted(candidates, key=lambda j: (-row[j], j))
            results.append([(self.ids[j], float(row[j])) for j in ranked])
        return results


def is_near_duplicate(
    embedding: np.ndarray,
    accepted: Sequence[np.ndarray],
    threshold: float = DEFAULT_DUPLICATE_COSINE,
) -> bool:
    """Whether ``embedding`` is at least ``threshold`` cosine-similar to any accepted one."""
    if len(accepted) == 0:
        return False
    similarity = _normalise(np.stack(accepted)) @ _normalise(embedding)
    return bool(similarity.max() >= threshold)


@dataclass(frozen=True)
class NearDuplicateCheck:
    """A batch's near-duplicate decision, passed as ``decide_stratum(is_duplicate=check)``.

    Applied like every other check: when the CLIP network that made the embeddings is
    calibrated, or when the batch's scoring config lists "duplicate" in `apply_uncalibrated`.
    While it is not applied, nothing is a near-duplicate.
    """

    threshold: float
    applied: bool

    @classmethod
    def for_batch(cls, config: ScoringConfig, *, clip_calibrated: bool) -> NearDuplicateCheck:
        return cls(
            threshold=config.duplicate_cosine,
            applied=clip_calibrated or "duplicate" in config.apply_uncalibrated,
        )

    def __call__(self, embedding: object, accepted: Sequence[object]) -> bool:
        # Typed as `decide_stratum` calls it; the stored embeddings are float32 vectors.
        if not self.applied:
            return False
        return is_near_duplicate(
            np.asarray(embedding), [np.asarray(e) for e in accepted], threshold=self.threshold
        )
