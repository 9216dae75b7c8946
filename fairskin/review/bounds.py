"""The gate's estimates and 95% bounds (criteria version 2), for this panel's judgement.

The estimand is what these raters would say about the population of images the study sampled:
the raters are fixed, the images are the sample. So the bounds come from the variation between
images only:

- the shares (b) and (c) are proportions of images (an image's median rating reaching the bar,
  an image having a rating below the bar: one Bernoulli outcome per rated image), with exact
  Clopper-Pearson bounds;
- the mean (a) pools all ratings, a ratio of per-image sums to per-image counts; its bound is
  the estimate minus / plus a t quantile (n - 1 degrees of freedom) times the linearised
  (delta-method) standard error over images, which with complete ratings is the t-bound on
  per-image mean ratings.

Each bound is one-sided at 97.5%, so [low, high] is a two-sided 95% interval. Every function
takes a `(..., raters, images)` array of scores (NaN: not rated) and works along the last two
axes, so that a simulation can check many studies at once with the gate's own code.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import beta, t

CONFIDENCE = 0.95
_TAIL = (1 - CONFIDENCE) / 2

Bounds = tuple[np.ndarray, np.ndarray, np.ndarray]  # estimate, low, high (NaN: undefined)


def share_bounds(successes: np.ndarray, n: np.ndarray) -> Bounds:
    """The share `successes / n` with exact (Clopper-Pearson) 97.5% one-sided bounds."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        low = np.where(k > 0, beta.ppf(_TAIL, np.maximum(k, 1), n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - _TAIL, k + 1, np.maximum(n - k, 1)), 1.0)
    undefined = n < 1
    return estimate, np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def mean_bounds(scores: np.ndarray) -> Bounds:
    """The mean of all ratings with t-bounds from the spread between images."""
    scores = np.asarray(scores, dtype=float)
    rated = ~np.isnan(scores)
    counts = rated.sum(axis=-2).astype(float)
    sums = np.where(rated, scores, 0.0).sum(axis=-2)
    n_images = (counts > 0).sum(axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = sums.sum(axis=-1) / counts.sum(axis=-1)
        per_image = counts.sum(axis=-1) / n_images
        residual = (sums - estimate[..., None] * counts) / per_image[..., None]
        se = np.sqrt((residual**2).sum(axis=-1) / (n_images * (n_images - 1)))
        quantile = t.ppf(1 - _TAIL, np.maximum(n_images - 1, 1))
    defined = n_images >= 2
    low = np.where(defined, np.clip(estimate - quantile * se, 1, 7), np.nan)
    high = np.where(defined, np.clip(estimate + quantile * se, 1, 7), np.nan)
    return estimate, low, high


def image_outcomes(
    scores: np.ndarray, median_at_least: int, low_below: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: rated at all, median rating >= `median_at_least`, any rating < `low_below`."""
    scores = np.asarray(scores, dtype=float)
    rated = (~np.isnan(scores)).any(axis=-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: unrated images
        medians = np.nanmedian(scores, axis=-2)
    reaches = rated & (medians >= median_at_least)
    low = rated & (np.nan_to_num(scores, nan=np.inf) < low_below).any(axis=-2)
    return rated, reaches, low


def gate_bounds(scores: np.ndarray, median_at_least: int, low_below: int) -> dict[str, Bounds]:
    """Criteria (a) mean, (b) median share and (c) low share with their bounds."""
    rated, reaches, low = image_outcomes(scores, median_at_least, low_below)
    n_rated = rated.sum(axis=-1)
    return {
        "mean": mean_bounds(scores),
        "median_share": share_bounds(reaches.sum(axis=-1), n_rated),
        "low_share": share_bounds(low.sum(axis=-1), n_rated),
    }
