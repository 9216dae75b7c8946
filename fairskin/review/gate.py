"""The acceptance gate of the blinded realism review and the report around it: the gate with
two-level bootstrap intervals, its breakdown by rater, skin type and diagnosis, synthetic-vs-real
separation and rater behaviour, with agreement (`agreement.py`) alongside.

Inputs and the conventions of the report are described in `fairskin.review.study`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from fairskin.review.agreement import rater_agreement
from fairskin.review.audit import auc_real_positive
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

# --- gate criteria -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCriteria:
    """When the synthetic images count as realistic. Defaults are the planning document's.

    (a) the mean of all scored ratings of synthetic images is greater than `mean_min`;
    (b) more than `median_share_min` of synthetic images have a median rating >= `median_at_least`;
    (c) fewer than `low_share_max` of synthetic images got at least one rating below `low_below`;
    (d) every rater finished their scored items.
    With `use_interval`, (a) and (b) are judged on the lower bound and (c) on the upper bound of
    the bootstrap 95% interval. With `per_fst`, (a) must also hold within each skin type.
    """

    version: int = 1
    mean_min: float = 5.0
    median_share_min: float = 0.90
    median_at_least: int = 4
    low_share_max: float = 0.10
    low_below: int = 3
    use_interval: bool = False
    per_fst: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not is_int(self.version) or self.version < 1:
            problems.append(f"version must be an integer >= 1, got {self.version!r}")
        if not is_number(self.mean_min) or not 1 <= self.mean_min <= 7:
            problems.append(f"mean_min must be a number in [1, 7], got {self.mean_min!r}")
        for name in ("median_share_min", "low_share_max"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= 1:
                problems.append(f"{name} must be a share in [0, 1], got {value!r}")
        for name in ("median_at_least", "low_below"):
            value = getattr(self, name)
            if not is_int(value) or value not in SCORES:
                problems.append(f"{name} must be an integer score 1-7, got {value!r}")
        for name in ("use_interval", "per_fst"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                problems.append(f"{name} must be true or false, got {value!r}")
        if problems:
            raise ValueError("invalid gate criteria: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateCriteria:
        """Missing keys take the defaults; unknown keys are an error, not silently dropped."""
        if not isinstance(data, Mapping):
            raise ValueError(f"gate criteria must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(f"unknown gate criteria key(s): {', '.join(map(str, unknown))}")
        return cls(**data)


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


def gate_report(
    items: Sequence[ReviewItem | Mapping[str, Any]],
    ratings: Sequence[Rating | Mapping[str, Any]],
    criteria: GateCriteria,
    *,
    raters: Mapping[str, bool],
    n_boot: int = 2000,
    seed: int = 0,
    too_fast_seconds: float = 1.5,
    min_group_items: int = 10,
) -> dict[str, Any]:
    """The review's full statistics as plain JSON.

    `raters` maps every enrolled rater id to whether they finished all their scored items
    (criterion d). Warm-up ratings may name items outside `items`; other ratings may not.
    FST and diagnosis groups with fewer than `min_group_items` synthetic images are marked.
    The synthetic-minus-real mean difference is of the mean scored rating (as criterion a);
    the Mann-Whitney test and the pooled AUC use per-image mean ratings."""
    study = Study(items, ratings, raters)
    if not isinstance(criteria, GateCriteria):
        raise ValueError(f"criteria must be a GateCriteria, got {type(criteria).__name__}")
    if not is_int(n_boot) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if criteria.use_interval and n_boot == 0:
        raise ValueError("criteria judged on the bootstrap interval need n_boot > 0")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not is_number(too_fast_seconds) or too_fast_seconds < 0:
        raise ValueError(f"too_fast_seconds must be a number >= 0, got {too_fast_seconds!r}")
    if not is_int(min_group_items) or min_group_items < 1:
        raise ValueError(f"min_group_items must be an integer >= 1, got {min_group_items!r}")
    return {
        "criteria": criteria.to_dict(),
        "bootstrap": {
            "n_boot": n_boot,
            "seed": seed,
            "confidence": 0.95,
            "resampled": "raters and images, with replacement, in every replicate",
        },
        "counts": study.counts(),
        "gate": _gate(study, criteria, n_boot, seed),
        "breakdown": _breakdown(study, criteria, min_group_items),
        "synthetic_vs_real": _synthetic_vs_real(study, n_boot, seed),
        "agreement": rater_agreement(study),
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


def _gate(study: Study, criteria: GateCriteria, n_boot: int, seed: int) -> dict[str, Any]:
    synthetic = study.origin_scores("synthetic")
    point = _gate_point(synthetic, criteria)
    why = None if point is not None else "no scored ratings of synthetic images"
    intervals: list[tuple[float | None, float | None]] = [(None, None)] * 3
    raters_with = synthetic[~np.isnan(synthetic).all(axis=1)]
    if point is not None and n_boot:
        draws = two_level_bootstrap(
            lambda r, i: _gate_point(raters_with[np.ix_(r, i)], criteria),
            raters_with.shape[0],
            [synthetic.shape[1]],
            n_boot,
            np.random.default_rng([seed, 0]),
        )
        intervals = [percentile_interval([d[k] for d in draws]) for k in range(3)]
    estimate = point if point is not None else (None, None, None)
    use_interval = criteria.use_interval
    gate: dict[str, Any] = {
        "mean": _judge(
            estimate[0],
            intervals[0],
            criteria.mean_min,
            greater=True,
            use_interval=use_interval,
            why=why,
        ),
        "median_share": _judge(
            estimate[1],
            intervals[1],
            criteria.median_share_min,
            greater=True,
            use_interval=use_interval,
            why=why,
        ),
        "low_share": _judge(
            estimate[2],
            intervals[2],
            criteria.low_share_max,
            greater=False,
            use_interval=use_interval,
            why=why,
        ),
    }
    unfinished = [rater for rater, done in study.finished.items() if not done]
    gate["raters_finished"] = {
        "n_raters": len(study.raters),
        "n_finished": len(study.raters) - len(unfinished),
        "unfinished": unfinished,
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
        if estimate is not None and n_boot:
            draws = two_level_bootstrap(
                lambda r, i, s=scores: nanmean_or_none(s[np.ix_(r, i)]),
                scores.shape[0],
                [columns.size],
                n_boot,
                np.random.default_rng([seed, 10 + fst]),
            )
            interval = percentile_interval(draws)
        why = None if estimate is not None else "no scored ratings of this skin type's images"
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
            groups[str(value)] = {
                **estimates(study.scores[:, columns], int(columns.size)),
                "few_items": bool(columns.size < min_group_items),
            }
        return groups

    synthetic = study.origin_scores("synthetic")
    return {
        "by_rater": {
            rater: estimates(synthetic[[index]], synthetic.shape[1])
            for index, rater in enumerate(study.raters)
        },
        "by_fst": grouped(lambda item: item.fst),
        "by_diagnosis": grouped(lambda item: item.diagnosis),
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
    }
    half = len(ordered) // 2  # with an odd count the middle rating is in neither half
    if half < 2:
        result["drift"]["why"] = "needs at least 4 scored ratings"
    else:
        first, second = scores[:half], scores[-half:]
        test = mannwhitneyu(second, first, alternative="two-sided")
        result["drift"] = {
            "value": float(second.mean() - first.mean()),
            "p_value": finite_or_none(test.pvalue),
            "why": None,
        }
    return result
