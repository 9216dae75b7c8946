"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018).

KID is the squared maximum mean discrepancy between two feature sets under the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3. Unlike FID its estimator is unbiased, so values
from small strata (the dark-skin cells) are not inflated just because they have fewer images.
"""

from __future__ import annotations

from typing import cast

import numpy as np


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, *, subset_size: int = 100, n_subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 estimate over `n_subsets` random subsets.

    Each subset draws `subset_size` rows from each set without replacement; the size is capped
    at the smaller set. The std is the spread of the per-subset estimates (ddof 0, as in the
    authors' code), not the standard error of the mean.
    """
    a = _checked(a, "a")
    b = _checked(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, int) or n_subsets < 1:
        raise ValueError(f"n_subsets must be a positive integer, got {n_subsets!r}")

    size = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    estimates = np.empty(n_subsets)
    for i in range(n_subsets):
        x = a[rng.choice(a.shape[0], size, replace=False)]
        y = b[rng.choice(b.shape[0], size, replace=False)]
        estimates[i] = unbiased_mmd2(x, y)
    return float(estimates.mean()), float(estimates.std())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gram matrix of k(x, y) = (x.y / d + 1)^3 between the rows of x and of y."""
    return cast("np.ndarray", (x @ y.T / x.shape[1] + 1.0) ** 3)


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equal-sized samples (rows).

    The within-sample means leave out the diagonal k(x_i, x_i): including it is what biases
    the plain V-statistic upwards.
    """
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def _checked(features: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a (n, dim) array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows for an unbiased estimate, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x
