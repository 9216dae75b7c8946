"""Streaming mean and covariance of feature vectors, mergeable across shards.

FID needs the mean and covariance of thousands of 2048-d feature vectors that are produced
shard by shard on several GPU workers. Holding every vector is O(n * dim); this keeps O(dim^2).

Why Chan et al.'s pairwise update rather than running sums of x and x x^T: the covariance from
raw sums is (sum x x^T - n mu mu^T) / (n - 1), a difference of two large, nearly equal numbers
whenever the mean is large next to the spread (Inception pool features are post-ReLU averages, so
every coordinate has a positive mean). Keeping the centred sum of squares M2 and combining
blocks with the mean-shift correction avoids that cancellation, and the same formula merges
per-shard statistics exactly (Chan, Golub & LeVeque 1979).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Bumped if the stored layout changes, so old rows are rejected instead of misread.
_FORMAT_VERSION = 1


class StreamingGaussian:
    """Count, mean and centred sum of squares of the vectors seen so far (float64)."""

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim, dtype=np.float64)
        self._m2 = np.zeros((dim, dim), dtype=np.float64)

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("the mean of no vectors is undefined: call update() first")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (n - 1) sample covariance, matching np.cov(x, rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"a sample covariance needs at least 2 vectors, have {self.count}")
        return self._m2 / (self.count - 1)

    def update(self, batch: np.ndarray) -> None:
        """Add the rows of a (n, dim) batch. A batch with no rows changes nothing."""
        rows = np.asarray(batch, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"batch must have shape (n, {self.dim}), got {rows.shape}")
        if not np.isfinite(rows).all():
            # One NaN would poison the statistics of every later shard, so refuse it here.
            raise ValueError("batch contains NaN or infinite values")
        if rows.shape[0] == 0:
            return
        batch_mean = rows.mean(axis=0)
        centred = rows - batch_mean
        self._combine(rows.shape[0], batch_mean, centred.T @ centred)

    def merge(self, other: StreamingGaussian) -> None:
        """Fold another accumulator's vectors into this one, as if seen in one pass."""
        if not isinstance(other, StreamingGaussian):
            raise TypeError(f"can only merge a StreamingGaussian, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge dim {other.dim} statistics into dim {self.dim}")
        if other.count == 0:
            return
        # Copies, so that merging an accumulator with itself reads the values from before.
        self._combine(other.count, other._mean.copy(), other._m2.copy())

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / total)
        self.count = total

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers for a JSON column; Python floats round-trip exactly.

        M2 is symmetric, so only its upper triangle (row-major) is stored: for dim 2048 that
        is ~2.1 M numbers instead of ~4.2 M.
        """
        upper = self._m2[np.triu_indices(self.dim)]
        return {
            "format": _FORMAT_VERSION,
            "dim": self.dim,
            "count": self.count,
            "mean": self._mean.tolist(),
            "m2_upper": upper.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamingGaussian:
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict of statistics, got {type(data).__name__}")
        missing = {"format", "dim", "count", "mean", "m2_upper"} - data.keys()
        if missing:
            raise ValueError(f"statistics are missing keys: {sorted(missing)}")
        if data["format"] != _FORMAT_VERSION:
            raise ValueError(f"unsupported statistics format {data['format']!r}")
        stats = cls(data["dim"])
        count = data["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        mean = np.asarray(data["mean"], dtype=np.float64)
        upper = np.asarray(data["m2_upper"], dtype=np.float64)
        n_upper = stats.dim * (stats.dim + 1) // 2
        if mean.shape != (stats.dim,) or upper.shape != (n_upper,):
            raise ValueError(
                f"for dim {stats.dim} expected {stats.dim} means and {n_upper} upper-triangle "
                f"values, got shapes {mean.shape} and {upper.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(upper).all()):
            raise ValueError("statistics contain NaN or infinite values")
        m2 = np.zeros((stats.dim, stats.dim), dtype=np.float64)
        m2[np.triu_indices(stats.dim)] = upper
        # Mirror the strict upper triangle into the lower one.
        m2 = m2 + np.triu(m2, k=1).T
        stats.count, stats._mean, stats._m2 = count, mean, m2
        return stats
