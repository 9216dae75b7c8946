"""Rater agreement: ordinal Krippendorff's alpha, intraclass correlations and test-retest."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pingouin

from fairskin.review.study import Rating, Study, finite_or_none

# pingouin 0.7 labels the ICCs after McGraw & Wong; the report keeps Shrout & Fleiss's numbers.
_ICC_NAMES = {
    "ICC(1,1)": "ICC1",
    "ICC(A,1)": "ICC2",
    "ICC(C,1)": "ICC3",
    "ICC(1,k)": "ICC1k",
    "ICC(A,k)": "ICC2k",
    "ICC(C,k)": "ICC3k",
}


_UNDEFINED = "ICC undefined: its denominator is zero (no variance between items or residual)"


def rater_agreement(study: Study) -> dict[str, Any]:
    """Alpha over all scored ratings, ICCs over the items every rater scored, and each rater's
    test-retest pairs."""
    complete = ~np.isnan(study.scores).any(axis=0)
    test_retest = {}
    for rater in study.raters:
        scored = {r.item_id: r.score for r in study.scored_by[rater]}
        test_retest[rater] = _test_retest(scored, study.retests_by[rater])
    return {
        "krippendorff_alpha_ordinal": krippendorff_alpha_ordinal(study.scores),
        "icc": intraclass_correlations(study.scores[:, complete].T),
        "test_retest": test_retest,
    }


def krippendorff_alpha_ordinal(reliability_data: np.ndarray) -> dict[str, Any]:
    """Ordinal Krippendorff's alpha of a raters x items matrix, NaN where a rater gave no value.

    Only items with two or more values are pairable; alpha is undefined without pairable items
    or when all pairable values are the same (no expected disagreement)."""
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"reliability data must be raters x items, got shape {data.shape}")
    pairable = data[:, np.count_nonzero(~np.isnan(data), axis=0) >= 2]
    result: dict[str, Any] = {
        "value": None,
        "n_raters": int(data.shape[0]),
        "n_items": int(pairable.shape[1]),
        "why": None,
    }
    if data.shape[0] < 2:
        result["why"] = "needs at least 2 raters"
    elif pairable.shape[1] == 0:
        result["why"] = "no item was rated by 2 or more raters"
    elif np.unique(pairable[~np.isnan(pairable)]).size < 2:
        result["why"] = "all ratings of the items rated by 2 or more raters are identical"
    else:
        result["value"] = float(
            krippendorff.alpha(reliability_data=pairable, level_of_measurement="ordinal")
        )
    return result


def intraclass_correlations(scores: np.ndarray) -> dict[str, Any]:
    """All six ICCs (Shrout & Fleiss / McGraw & Wong) of a complete items x raters matrix.

    ICC2 / ICC2k are two-way random, absolute agreement, for one rater / the mean of k raters.
    The 95% intervals come from pingouin, which rounds them to 2 decimals."""
    data = np.asarray(scores, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"scores must be items x raters, got shape {data.shape}")
    if np.isnan(data).any():
        raise ValueError("scores must be complete: keep only items rated by every rater")
    n_items, n_raters = data.shape
    result: dict[str, Any] = {"n_items": int(n_items), "n_raters": int(n_raters), "why": None}

    def empty(why: str) -> dict[str, Any]:
        icc = {"value": None, "ci_low": None, "ci_high": None, "why": why}
        return {**result, **{name: dict(icc) for name in _ICC_NAMES.values()}, "why": why}

    if n_raters < 2:
        return empty("needs at least 2 raters")
    if n_items < 2:
        return empty("needs at least 2 items rated by every rater")
    if n_items * n_raters < 5:
        # pingouin's own minimum (it asserts): 2 items x 2 raters is too few.
        return empty(
            f"needs at least 5 ratings of items every rater scored, got {n_items * n_raters}"
        )
    if np.ptp(data) == 0:
        return empty("all ratings are identical")
    long = pd.DataFrame(
        {
            "item": np.repeat(np.arange(n_items), n_raters),
            "rater": np.tile(np.arange(n_raters), n_items),
            "score": data.ravel(),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # pingouin 0.7 calls a pandas API that pandas 3.1 deprecates; nothing for us to fix.
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        table = pingouin.intraclass_corr(data=long, targets="item", raters="rater", ratings="score")
    for row in table.itertuples(index=False):
        low, high = row.CI95
        value = finite_or_none(row.ICC)
        result[_ICC_NAMES[row.Type]] = {
            "value": value,
            "ci_low": finite_or_none(low),
            "ci_high": finite_or_none(high),
            "why": None if value is not None else _UNDEFINED,
        }
    if result["ICC2"]["value"] is None:
        result["why"] = _UNDEFINED
    return result


def _test_retest(scored: Mapping[str, int], retests: Sequence[Rating]) -> dict[str, Any]:
    pairs = [(scored[r.item_id], r.score) for r in retests if r.item_id in scored]
    result: dict[str, Any] = {
        "n_pairs": len(pairs),
        "n_unpaired": len(retests) - len(pairs),
        "exact_agreement": None,
        "mean_abs_difference": None,
        "why": None,
    }
    if not pairs:
        result["why"] = (
            "no retest ratings" if not retests else "no retest has a scored rating of the same item"
        )
        return result
    first, second = np.array(pairs, dtype=float).T
    result["exact_agreement"] = float(np.mean(first == second))
    result["mean_abs_difference"] = float(np.mean(np.abs(first - second)))
    return result
