"""The acceptance gate of the blinded realism review and the report around it: the gate with
two-level bootstrap intervals, its breakdown by rater, skin type and diagnosis, synthetic-vs-real
separation and rater behaviour, with agreement (`agreement.py`) alongside.

Inputs and the conventions of the report are described in `fairskin.review.study`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from fairskin.review.agreement import rater_agreement
from fairskin.review.audit import auc_real_positive
from fairskin.review.bounds import gate_bounds, mean_bounds
from fairskin.review.criteria import GateCriteria
from fairskin.review.quality import (
    blinding_criterion,
    failing_criteria,
    gate_caveats,
    rater_quality,
)
from fairskin.review.resampling import nanmean_or_none, percentile_interval, two_level_bootstrap
from fairskin.review.study import (
    SCORES,
    SKIN_TYPES,
    Rating,
    ReviewItem,
    Study,
    finite_or_none,
    is_int,
    is_number,
)

__all__ = ["GateCriteria", "gate_report"]

# --- helpers of the gate and the report -------------------------------------------------------


def _gate_point(scores: np.ndarray, criteria: GateCriteria) -> tuple[float, float, float] | None:
    """(mean rating, share of images with median >= bar, share with a rating below bar) over a
    raters x images matrix with NaN where unrated; images nobody rated are left out."""
    rated = ~np.isnan(scores)
    columns = rated.any(axis=0)
    if not columns.any():
        return None
    scores = scores[:, columns]
    n_images = scores.shape[1]
    mean = float(np.nanmean(scores))
    medians = np.nanmedian(scores, axis=0)
    median_share = int(np.count_nonzero(medians >= criteria.median_at_least)) / n_images
    lowest = np.nanmin(scores, axis=0)
    low_share = int(np.count_nonzero(lowest < criteria.low_below)) / n_images
    return mean, median_share, low_share


def _judge(
    estimate: float | None,
    interval: tuple[float | None, float | None],
    limit: float,
    *,
    greater: bool,
    use_interval: bool,
    why: str | None,
) -> dict[str, Any]:
    if use_interval:
        judged_on, judged = ("ci_low", interval[0]) if greater else ("ci_high", interval[1])
    else:
        judged_on, judged = "estimate", estimate
    passed = judged is not None and (judged > limit if greater else judged < limit)
    if why is None and judged is None:
        why = "no bootstrap replicate could be computed"
    if why is None and None in interval:
        why = "no interval: the bootstrap drew no replicate (n_boot is 0)"
    return {
        "estimate": estimate,
        "ci_low": interval[0],
        "ci_high": interval[1],
        "judged_on": judged_on,
        "judged": judged,
        "comparison": ">" if greater else "<",
        "limit": float(limit),
        "passed": bool(passed),
        "why": why,
    }


# --- the report --------------------------------------------------------------------------------

_INTERVALS = {
    1: "bootstrap percentile 95% intervals, resampling raters and images in every replicate",
    2: (
        "this panel's judgement (raters fixed, images a sample): exact Clopper-Pearson bounds "
        "for the shares (b) and (c), a t-bound over images for the mean (a); each bound "
        "one-sided 97.5%, together a two-sided 95% interval"
    ),
}


def gate_report(
    items: Sequence[ReviewItem | Mapping[str, Any]],
    ratings: Sequence[Rating | Mapping[str, Any]],
    criteria: GateCriteria,
    *,
    raters: Mapping[str, bool],
    n_boot: int = 2000,
    seed: int = 0,
    too_fast_seconds: float | None = None,
    min_group_items: int = 10,
    blinding: Mapping[str, Any] | None = None,
    rater_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The review's full statistics as plain JSON.

    `raters` maps every enrolled rater id to whether they finished all their scored items
    (criterion d). Warm-up ratings may name items outside `items`; other ratings may not.
    FST and diagnosis groups with fewer than `min_group_items` synthetic images are marked.
    The synthetic-minus-real mean difference is of the mean scored rating (as criterion a);
    the Mann-Whitney test and the pooled AUC use per-image mean ratings. `too_fast_seconds`
    (default: the criteria's) is the behaviour section's limit. From criteria version 2 the
    gate also judges rater quality and `blinding`, the blinding audit (None: not audited);
    `rater_names` label raters in the reasons."""
    study = Study(items, ratings, raters)
    if not isinstance(criteria, GateCriteria):
        raise ValueError(f"criteria must be a GateCriteria, got {type(criteria).__name__}")
    if not is_int(n_boot) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if criteria.version == 1 and criteria.use_interval and n_boot == 0:
        raise ValueError("criteria judged on the bootstrap interval need n_boot > 0")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if too_fast_seconds is None:
        too_fast_seconds = criteria.too_fast_seconds
    if not is_number(too_fast_seconds) or too_fast_seconds < 0:
        raise ValueError(f"too_fast_seconds must be a number >= 0, got {too_fast_seconds!r}")
    if not is_int(min_group_items) or min_group_items < 1:
        raise ValueError(f"min_group_items must be an integer >= 1, got {min_group_items!r}")
    names = {rater: str((rater_names or {}).get(rater, rater)) for rater in study.raters}
    agreement = rater_agreement(study)
    gate = _gate(study, criteria, n_boot, seed, names)
    if criteria.version >= 2:
        gate["rater_quality"] = rater_quality(study, criteria, agreement["test_retest"], names)
        gate["blinding"] = blinding_criterion(blinding)
        gate["passed"] = gate["passed"] and all(
            gate[name]["passed"] for name in ("rater_quality", "blinding")
        )
    failing = failing_criteria(gate, criteria)
    gate["caveats"] = gate_caveats(gate, criteria) if criteria.version >= 2 else []
    return {
        "criteria": criteria.to_dict(),
        "bootstrap": {
            "n_boot": n_boot,
            "seed": seed,
            "confidence": 0.95,
            "resampled": "raters and images, with replacement, in every replicate",
            "gate_intervals": _INTERVALS[criteria.version],
        },
        "counts": study.counts(),
        "gate": {"failing": failing, "passed": gate.pop("passed"), **gate},
        "breakdown": _breakdown(study, criteria, min_group_items),
        "synthetic_vs_real": _synthetic_vs_real(study, n_boot, seed),
        "agreement": agreement,
        "raters": {
            rater: _behaviour(
                study.scored_by[rater],
                study.n_kind[rater]["warmup"],
                len(study.retests_by[rater]),
                too_fast_seconds,
            )
            for rater in study.raters
        },
    }


def _estimates(
    synthetic: np.ndarray, criteria: GateCriteria, n_boot: int, seed: int
) -> tuple[list[float | None], list[tuple[float | None, float | None]]]:
    """The (a)-(c) estimates and their 95% intervals, by the criteria's version."""
    point = _gate_point(synthetic, criteria)
    estimate: list[float | None] = list(point) if point is not None else [None] * 3
    intervals: list[tuple[float | None, float | None]] = [(None, None)] * 3
    if point is None:
        return estimate, intervals
    if criteria.version >= 2:
        bounds = gate_bounds(synthetic, criteria.median_at_least, criteria.low_below)
        intervals = [
            (finite_or_none(bounds[name][1]), finite_or_none(bounds[name][2]))
            for name in ("mean", "median_share", "low_share")
        ]
    elif n_boot:
        raters_with = synthetic[~np.isnan(synthetic).all(axis=1)]
        draws = two_level_bootstrap(
            lambda r, i: _gate_point(raters_with[np.ix_(r, i)], criteria),
            raters_with.shape[0],
            [synthetic.shape[1]],
            n_boot,
            np.random.default_rng([seed, 0]),
        )
        intervals = [percentile_interval([d[k] for d in draws]) for k in range(3)]
    return estimate, intervals


def _gate(
    study: Study, criteria: GateCriteria, n_boot: int, seed: int, names: Mapping[str, str]
) -> dict[str, Any]:
    synthetic = study.origin_scores("synthetic")
    estimate, intervals = _estimates(synthetic, criteria, n_boot, seed)
    why = None if estimate[0] is not None else "no scored ratings of synthetic images"
    if why is None and criteria.version >= 2 and intervals[0] == (None, None):
        why = "a bound needs at least 2 rated synthetic images"
    gate: dict[str, Any] = {}
    for index, name, limit, greater in (
        (0, "mean", criteria.mean_min, True),
        (1, "median_share", criteria.median_share_min, True),
        (2, "low_share", criteria.low_share_max, False),
    ):
        gate[name] = _judge(
            estimate[index],
            intervals[index],
            limit,
            greater=greater,
            use_interval=criteria.use_interval,
            why=why,
        )
    unfinished = [rater for rater, done in study.finished.items() if not done]
    gate["raters_finished"] = {
        "n_raters": len(study.raters),
        "n_finished": len(study.raters) - len(unfinished),
        "unfinished": unfinished,
        "unfinished_names": [names[rater] for rater in unfinished],
        "passed": not unfinished,
    }
    gate["mean_per_fst"] = (
        _mean_per_fst(study, criteria, n_boot, seed) if criteria.per_fst else None
    )
    passed = [
        gate[name]["passed"] for name in ("mean", "median_share", "low_share", "raters_finished")
    ]
    if gate["mean_per_fst"] is not None:
        passed.append(gate["mean_per_fst"]["passed"])
    gate["passed"] = all(passed)
    return gate


def _mean_per_fst(study: Study, criteria: GateCriteria, n_boot: int, seed: int) -> dict[str, Any]:
    groups = {}
    for fst in SKIN_TYPES:

        def of_type(item: ReviewItem, fst: int = fst) -> bool:
            return item.origin == "synthetic" and item.fst == fst

        columns = study.columns(of_type)
        if columns.size == 0:
            continue
        scores = study.scores[:, columns]
        scores = scores[~np.isnan(scores).all(axis=1)]
        estimate = finite_or_none(np.nanmean(scores)) if scores.size else None
        interval: tuple[float | None, float | None] = (None, None)
        why = None if estimate is not None else "no scored ratings of this skin type's images"
        if estimate is not None and criteria.version >= 2:
            _, low, high = mean_bounds(scores)
            interval = (finite_or_none(low), finite_or_none(high))
            if interval[0] is None:
                why = "a bound needs at least 2 rated images of this skin type"
        elif estimate is not None and n_boot:
            draws = two_level_bootstrap(
                lambda r, i, s=scores: nanmean_or_none(s[np.ix_(r, i)]),
                scores.shape[0],
                [columns.size],
                n_boot,
                np.random.default_rng([seed, 10 + fst]),
            )
            interval = percentile_interval(draws)
        groups[str(fst)] = {
            **_judge(
                estimate,
                interval,
                criteria.mean_min,
                greater=True,
                use_interval=criteria.use_interval,
                why=why,
            ),
            "n_items": int(columns.size),
        }
    if not groups:
        return {"groups": {}, "passed": False, "why": "no synthetic images"}
    return {"groups": groups, "passed": all(g["passed"] for g in groups.values()), "why": None}


def _group_interval(scores: np.ndarray, n_rated: int) -> dict[str, Any]:
    if n_rated < 2:
        return {"low": None, "high": None, "why": "a bound needs at least 2 rated images"}
    _, low, high = mean_bounds(scores)
    return {"low": finite_or_none(low), "high": finite_or_none(high), "why": None}


def _breakdown(study: Study, criteria: GateCriteria, min_group_items: int) -> dict[str, Any]:
    def estimates(scores: np.ndarray, n_items: int) -> dict[str, Any]:
        point = _gate_point(scores, criteria)
        mean, median_share, low_share = point if point is not None else (None, None, None)
        n_rated = int((~np.isnan(scores)).any(axis=0).sum())
        return {
            "n_items": n_items,
            "n_rated_items": n_rated,
            "mean": mean,
            "median_share": median_share,
            "low_share": low_share,
            "why": None if point is not None else "no scored ratings",
        }

    def grouped(key: Callable[[ReviewItem], Any]) -> dict[str, Any]:
        groups = {}
        for value in sorted({key(item) for item in study.items if item.origin == "synthetic"}):

            def in_group(item: ReviewItem, v: Any = value) -> bool:
                return item.origin == "synthetic" and bool(key(item) == v)

            columns = study.columns(in_group)
            scores = study.scores[:, columns]
            groups[str(value)] = {
                **estimates(scores, int(columns.size)),
                "few_items": bool(columns.size < min_group_items),
            }
            if criteria.version >= 2:  # the mean's bounds for this panel, shown, not judged
                rated = int((~np.isnan(scores)).any(axis=0).sum())
                groups[str(value)]["mean_interval"] = _group_interval(scores, rated)
        return groups

    synthetic = study.origin_scores("synthetic")
    return {
        "by_rater": {
            rater: estimates(synthetic[[index]], synthetic.shape[1])
            for index, rater in enumerate(study.raters)
        },
        "by_fst": grouped(lambda item: item.fst),
        "by_diagnosis": grouped(lambda item: item.diagnosis),
        "by_stratum": grouped(lambda item: f"{item.diagnosis} · FST {item.fst}"),
        "min_group_items": min_group_items,
    }


def _synthetic_vs_real(study: Study, n_boot: int, seed: int) -> dict[str, Any]:
    synthetic, real = study.origin_scores("synthetic"), study.origin_scores("real")
    result: dict[str, Any] = {}
    difference: dict[str, Any] = {"estimate": None, "ci_low": None, "ci_high": None, "why": None}
    if (~np.isnan(synthetic)).any() and (~np.isnan(real)).any():
        difference["estimate"] = float(np.nanmean(synthetic) - np.nanmean(real))
        if n_boot:
            keep = ~np.isnan(study.scores).all(axis=1)
            syn, rea = synthetic[keep], real[keep]

            def mean_difference(
                r: np.ndarray, i_syn: np.ndarray, i_real: np.ndarray
            ) -> float | None:
                a, b = (
                    nanmean_or_none(syn[np.ix_(r, i_syn)]),
                    nanmean_or_none(rea[np.ix_(r, i_real)]),
                )
                return None if a is None or b is None else a - b

            draws = two_level_bootstrap(
                mean_difference,
                int(keep.sum()),
                [synthetic.shape[1], real.shape[1]],
                n_boot,
                np.random.default_rng([seed, 1]),
            )
            difference["ci_low"], difference["ci_high"] = percentile_interval(draws)
        else:
            difference["why"] = "no interval: the bootstrap drew no replicate (n_boot is 0)"
    else:
        difference["why"] = "needs scored ratings of both synthetic and real images"
    result["mean_difference"] = difference

    # Per-image mean ratings, for images with at least one scored rating.
    rated = ~np.isnan(study.scores).all(axis=0)
    means = np.full(len(study.items), np.nan)
    means[rated] = np.nanmean(study.scores[:, rated], axis=0)
    origins = [item.origin for item in study.items]
    syn_means = [
        m for m, o, ok in zip(means, origins, rated, strict=True) if ok and o == "synthetic"
    ]
    real_means = [m for m, o, ok in zip(means, origins, rated, strict=True) if ok and o == "real"]
    test: dict[str, Any] = {
        "u_synthetic": None,
        "p_value": None,
        "n_synthetic": len(syn_means),
        "n_real": len(real_means),
        "why": None,
    }
    if syn_means and real_means:
        outcome = mannwhitneyu(syn_means, real_means, alternative="two-sided")
        test["u_synthetic"] = float(outcome.statistic)
        test["p_value"] = finite_or_none(outcome.pvalue)
        if test["p_value"] is None:
            test["why"] = "no p-value: every per-image mean rating is the same"
    else:
        test["why"] = "needs rated synthetic and rated real images"
    result["mann_whitney"] = test
    result["auc_pooled"] = auc_real_positive(
        [o for o, ok in zip(origins, rated, strict=True) if ok], means[rated].tolist()
    )
    by_rater = {}
    for index, rater in enumerate(study.raters):
        mine = ~np.isnan(study.scores[index])
        by_rater[rater] = auc_real_positive(
            [o for o, ok in zip(origins, mine, strict=True) if ok],
            study.scores[index, mine].tolist(),
        )
    result["auc_by_rater"] = by_rater
    return result


def _behaviour(
    scored: Sequence[Rating], n_warmup: int, n_retest: int, too_fast_seconds: float
) -> dict[str, Any]:
    ordered = sorted(scored, key=lambda r: r.position)
    seconds = np.array([r.seconds for r in ordered], dtype=float)
    scores = np.array([r.score for r in ordered], dtype=float)
    result: dict[str, Any] = {
        "n_scored": len(ordered),
        "n_warmup": n_warmup,
        "n_retest": n_retest,
        "median_seconds": float(np.median(seconds)) if len(ordered) else None,
        "too_fast_seconds": float(too_fast_seconds),
        "too_fast_share": float(np.mean(seconds < too_fast_seconds)) if len(ordered) else None,
        "score_counts": {str(s): int(np.count_nonzero(scores == s)) for s in SCORES},
        "drift": {"value": None, "p_value": None, "why": None},
        "why": None if ordered else "no scored ratings",
    }
    half = len(ordered) // 2  # with an odd count the middle rating is in neither half
    if half < 2:
        result["drift"]["why"] = "needs at least 4 scored ratings"
    else:
        first, second = scores[:half], scores[-half:]
        test = mannwhitneyu(second, first, alternative="two-sided")
        p_value = finite_or_none(test.pvalue)
        result["drift"] = {
            "value": float(second.mean() - first.mean()),
            "p_value": p_value,
            "why": None if p_value is not None else "no p-value: every rating is the same",
        }
    return result
