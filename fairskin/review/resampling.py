"""Resampling for the review report: the two-level bootstrap over raters and items, and the
percentile interval of its replicates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def percentile_interval(draws: Sequence[float]) -> tuple[float | None, float | None]:
    """The central 95% of the bootstrap replicates (None, None without any)."""
    if not draws:
        return None, None
    low, high = np.percentile(np.asarray(draws, dtype=float), [2.5, 97.5])
    return float(low), float(high)


def two_level_bootstrap(
    statistic: Callable[..., Any],
    n_raters: int,
    strata: Sequence[int],
    n_boot: int,
    rng: np.random.Generator,
) -> list[Any]:
    """Two-level resampling: raters with replacement, then items with replacement within each
    stratum, in every replicate. Replicates where the statistic is undefined are dropped."""
    draws = []
    for _ in range(n_boot):
        rater_idx = rng.integers(0, n_raters, n_raters)
        item_idx = [rng.integers(0, n, n) for n in strata]
        value = statistic(rater_idx, *item_idx)
        if value is not None:
            draws.append(value)
    return draws


def nanmean_or_none(scores: np.ndarray) -> float | None:
    """The mean of the ratings given (NaN: not rated), or None when there is none."""
    return float(np.nanmean(scores)) if (~np.isnan(scores)).any() else None
