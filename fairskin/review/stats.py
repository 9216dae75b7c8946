"""Statistics of the blinded realism review: the acceptance gate with two-level bootstrap
intervals, synthetic-vs-real separation, rater agreement, rater behaviour, and an audit of
whether served files give the origin away.

Scores run 1-7 (1 = clearly fake, 4 = uncertain, 7 = clinically realistic). Only "scored"
ratings enter the statistics; "warmup" ratings never count and "retest" ratings (a repeated
item) are used for test-retest agreement only. Every report is plain JSON: a statistic that
cannot be computed is None next to a "why" string saying what was missing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pingouin
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

ORIGINS = ("synthetic", "real")
KINDS = ("scored", "warmup", "retest")
SCORES = tuple(range(1, 8))
SKIN_TYPES = tuple(range(1, 7))
# pingouin 0.7 labels the ICCs after McGraw & Wong; the report keeps Shrout & Fleiss's numbers.
_ICC_NAMES = {"ICC(1,1)": "ICC1", "ICC(A,1)": "ICC2", "ICC(C,1)": "ICC3",
              "ICC(1,k)": "ICC1k", "ICC(A,k)": "ICC2k", "ICC(C,k)": "ICC3k"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(value))


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewItem:
    item_id: str
    origin: str  # "synthetic" | "real"
    diagnosis: str
    fst: int  # Fitzpatrick skin type 1-6

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ValueError(f"item_id must be a non-empty string, got {self.item_id!r}")
        if self.origin not in ORIGINS:
            raise ValueError(f"item {self.item_id}: origin must be one of {ORIGINS}, "
                             f"got {self.origin!r}")
        if not isinstance(self.diagnosis, str) or not self.diagnosis:
            raise ValueError(f"item {self.item_id}: diagnosis must be a non-empty string")
        if not _is_int(self.fst) or self.fst not in SKIN_TYPES:
            raise ValueError(f"item {self.item_id}: fst must be an integer 1-6, got {self.fst!r}")


@dataclass(frozen=True)
class Rating:
    rater_id: str
    item_id: str
    score: int
    seconds: float  # time spent on the image
    position: int  # place in that rater's order
    kind: str = "scored"  # "scored" | "warmup" | "retest"

    def __post_init__(self) -> None:
        where = f"rating by {self.rater_id!r} of {self.item_id!r}"
        for name in ("rater_id", "item_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}: {name} must be a non-empty string, got {value!r}")
        if not _is_int(self.score) or self.score not in SCORES:
            raise ValueError(f"{where}: score must be an integer 1-7, got {self.score!r}")
        if not _is_number(self.seconds) or self.seconds < 0:
            raise ValueError(f"{where}: seconds must be a finite number >= 0, "
                             f"got {self.seconds!r}")
        if not _is_int(self.position):
            raise ValueError(f"{where}: position must be an integer, got {self.position!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")


def _as_item(value: ReviewItem | Mapping[str, Any]) -> ReviewItem:
    if isinstance(value, ReviewItem):
        return value
    missing = [f.name for f in fields(ReviewItem) if f.name not in value]
    if missing:
        raise ValueError(f"item {dict(value)!r} is missing {', '.join(missing)}")
    return ReviewItem(item_id=str(value["item_id"]), origin=value["origin"],
                      diagnosis=value["diagnosis"], fst=value["fst"])


def _as_rating(value: Rating | Mapping[str, Any]) -> Rating:
    if isinstance(value, Rating):
        return value
    required = ("rater_id", "item_id", "score", "seconds", "position")
    missing = [name for name in required if name not in value]
    if missing:
        raise ValueError(f"rating {dict(value)!r} is missing {', '.join(missing)}")
    return Rating(rater_id=str(value["rater_id"]), item_id=str(value["item_id"]),
                  score=value["score"], seconds=value["seconds"], position=value["position"],
                  kind=value.get("kind", "scored"))


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
        if not _is_int(self.version) or self.version < 1:
            problems.append(f"version must be an integer >= 1, got {self.version!r}")
        if not _is_number(self.mean_min) or not 1 <= self.mean_min <= 7:
            problems.append(f"mean_min must be a number in [1, 7], got {self.mean_min!r}")
        for name in ("median_share_min", "low_share_max"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                problems.append(f"{name} must be a share in [0, 1], got {value!r}")
        for name in ("median_at_least", "low_below"):
            value = getattr(self, name)
            if not _is_int(value) or value not in SCORES:
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


# --- helpers shared by the report ------------------------------------------------------------


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _interval(draws: Sequence[float]) -> tuple[float | None, float | None]:
    if not draws:
        return None, None
    low, high = np.percentile(np.asarray(draws, dtype=float), [2.5, 97.5])
    return float(low), float(high)


def _bootstrap(statistic: Callable[..., Any], n_raters: int, strata: Sequence[int],
               n_boot: int, rng: np.random.Generator) -> list[Any]:
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


def _judge(estimate: float | None, interval: tuple[float | None, float | None], limit: float,
           greater: bool, use_interval: bool, why: str | None) -> dict[str, Any]:
    if use_interval:
        judged_on, judged = ("ci_low", interval[0]) if greater else ("ci_high", interval[1])
    else:
        judged_on, judged = "estimate", estimate
    passed = judged is not None and (judged > limit if greater else judged < limit)
    if why is None and judged is None:
        why = "no bootstrap replicate could be computed"
    return {"estimate": estimate, "ci_low": interval[0], "ci_high": interval[1],
            "judged_on": judged_on, "judged": judged, "comparison": ">" if greater else "<",
            "limit": float(limit), "passed": bool(passed), "why": why}


def _auc_real_positive(origins: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
    n_real = sum(origin == "real" for origin in origins)
    n_synthetic = len(origins) - n_real
    result: dict[str, Any] = {"value": None, "n_real": n_real, "n_synthetic": n_synthetic,
                              "why": None}
    if n_real == 0 or n_synthetic == 0:
        result["why"] = "needs rated real and rated synthetic images"
    else:
        is_real = [origin == "real" for origin in origins]
        result["value"] = float(roc_auc_score(is_real, scores))
    return result


# --- agreement ---------------------------------------------------------------------------------


def krippendorff_alpha_ordinal(reliability_data: np.ndarray) -> dict[str, Any]:
    """Ordinal Krippendorff's alpha of a raters x items matrix, NaN where a rater gave no value.

    Only items with two or more values are pairable; alpha is undefined without pairable items
    or when all pairable values are the same (no expected disagreement)."""
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"reliability data must be raters x items, got shape {data.shape}")
    pairable = data[:, np.count_nonzero(~np.isnan(data), axis=0) >= 2]
    result: dict[str, Any] = {"value": None, "n_raters": int(data.shape[0]),
                              "n_items": int(pairable.shape[1]), "why": None}
    if data.shape[0] < 2:
        result["why"] = "needs at least 2 raters"
    elif pairable.shape[1] == 0:
        result["why"] = "no item was rated by 2 or more raters"
    elif np.unique(pairable[~np.isnan(pairable)]).size < 2:
        result["why"] = "all ratings of the items rated by 2 or more raters are identical"
    else:
        result["value"] = float(krippendorff.alpha(reliability_data=pairable,
                                                   level_of_measurement="ordinal"))
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
    empty = {name: {"value": None, "ci_low": None, "ci_high": None}
             for name in ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")}
    if n_raters < 2:
        return {**result, **empty, "why": "needs at least 2 raters"}
    if n_items < 2:
        return {**result, **empty, "why": "needs at least 2 items rated by every rater"}
    if np.ptp(data) == 0:
        return {**result, **empty, "why": "all ratings are identical"}
    long = pd.DataFrame({"item": np.repeat(np.arange(n_items), n_raters),
                         "rater": np.tile(np.arange(n_raters), n_items),
                         "score": data.ravel()})
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # pingouin 0.7 calls a pandas API that pandas 3.1 deprecates; nothing for us to fix.
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        table = pingouin.intraclass_corr(data=long, targets="item", raters="rater",
                                         ratings="score")
    for row in table.itertuples(index=False):
        low, high = row.CI95
        result[_ICC_NAMES[row.Type]] = {"value": _float(row.ICC), "ci_low": _float(low),
                                        "ci_high": _float(high)}
    if result["ICC2"]["value"] is None:
        result["why"] = "ICC undefined: no variance between items beyond the residual"
    return result


def _test_retest(scored: Mapping[str, int], retests: Sequence[Rating]) -> dict[str, Any]:
    pairs = [(scored[r.item_id], r.score) for r in retests if r.item_id in scored]
    result: dict[str, Any] = {"n_pairs": len(pairs), "n_unpaired": len(retests) - len(pairs),
                              "exact_agreement": None, "mean_abs_difference": None, "why": None}
    if not pairs:
        result["why"] = ("no retest ratings" if not retests
                         else "no retest has a scored rating of the same item")
        return result
    first, second = np.array(pairs, dtype=float).T
    result["exact_agreement"] = float(np.mean(first == second))
    result["mean_abs_difference"] = float(np.mean(np.abs(first - second)))
    return result


def _behaviour(scored: Sequence[Rating], n_warmup: int, n_retest: int,
               too_fast_seconds: float) -> dict[str, Any]:
    ordered = sorted(scored, key=lambda r: r.position)
    seconds = np.array([r.seconds for r in ordered], dtype=float)
    scores = np.array([r.score for r in ordered], dtype=float)
    result: dict[str, Any] = {
        "n_scored": len(ordered), "n_warmup": n_warmup, "n_retest": n_retest,
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
        result["drift"] = {"value": float(second.mean() - first.mean()),
                           "p_value": _float(test.pvalue), "why": None}
    return result


# --- the report --------------------------------------------------------------------------------


def gate_report(items: Sequence[ReviewItem | Mapping[str, Any]],
                ratings: Sequence[Rating | Mapping[str, Any]],
                criteria: GateCriteria, *, raters: Mapping[str, bool], n_boot: int = 2000,
                seed: int = 0, too_fast_seconds: float = 1.5,
                min_group_items: int = 10) -> dict[str, Any]:
    """The review's full statistics as plain JSON.

    `raters` maps every enrolled rater id to whether they finished all their scored items
    (criterion d). Warm-up ratings may name items outside `items`; other ratings may not.
    FST and diagnosis groups with fewer than `min_group_items` synthetic images are marked.
    The synthetic-minus-real mean difference is of the mean scored rating (as criterion a);
    the Mann-Whitney test and the pooled AUC use per-image mean ratings."""
    study = _Study(items, ratings, raters)
    if not isinstance(criteria, GateCriteria):
        raise ValueError(f"criteria must be a GateCriteria, got {type(criteria).__name__}")
    if not _is_int(n_boot) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if criteria.use_interval and n_boot == 0:
        raise ValueError("criteria judged on the bootstrap interval need n_boot > 0")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not _is_number(too_fast_seconds) or too_fast_seconds < 0:
        raise ValueError(f"too_fast_seconds must be a number >= 0, got {too_fast_seconds!r}")
    if not _is_int(min_group_items) or min_group_items < 1:
        raise ValueError(f"min_group_items must be an integer >= 1, got {min_group_items!r}")
    return {
        "criteria": criteria.to_dict(),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": 0.95,
                      "resampled": "raters and images, with replacement, in every replicate"},
        "counts": study.counts(),
        "gate": _gate(study, criteria, n_boot, seed),
        "breakdown": _breakdown(study, criteria, min_group_items),
        "synthetic_vs_real": _synthetic_vs_real(study, n_boot, seed),
        "agreement": _agreement(study),
        "raters": {rater: _behaviour(study.scored_by[rater], study.n_kind[rater]["warmup"],
                                     len(study.retests_by[rater]), too_fast_seconds)
                   for rater in study.raters},
    }


class _Study:
    """Validated items and ratings, with the scored ratings as a raters x items matrix."""

    def __init__(self, items: Sequence[ReviewItem | Mapping[str, Any]],
                 ratings: Sequence[Rating | Mapping[str, Any]],
                 raters: Mapping[str, bool]) -> None:
        if not isinstance(raters, Mapping) or not raters:
            raise ValueError("raters must map each enrolled rater id to whether they finished")
        self.finished = {}
        for key, done in raters.items():
            if not isinstance(done, bool):
                raise ValueError(f"rater {key!r}: finished must be true or false, got {done!r}")
            if str(key) in self.finished:
                raise ValueError(f"rater id {key!r} appears twice")
            self.finished[str(key)] = done
        self.raters = list(self.finished)
        self.items = [_as_item(item) for item in items]
        if not self.items:
            raise ValueError("no items to report on")
        self.column = {}
        for index, item in enumerate(self.items):
            if item.item_id in self.column:
                raise ValueError(f"item id {item.item_id!r} appears twice")
            self.column[item.item_id] = index
        row = {rater: index for index, rater in enumerate(self.raters)}

        self.scores = np.full((len(self.raters), len(self.items)), np.nan)
        self.scored_by: dict[str, list[Rating]] = {rater: [] for rater in self.raters}
        self.retests_by: dict[str, list[Rating]] = {rater: [] for rater in self.raters}
        self.n_kind = {rater: dict.fromkeys(KINDS, 0) for rater in self.raters}
        positions: set[tuple[str, int]] = set()
        for rating in map(_as_rating, ratings):
            if rating.rater_id not in row:
                raise ValueError(f"rating by unknown rater {rating.rater_id!r}")
            if (rating.rater_id, rating.position) in positions:
                raise ValueError(f"rater {rating.rater_id!r} has two ratings at position "
                                 f"{rating.position}")
            positions.add((rating.rater_id, rating.position))
            self.n_kind[rating.rater_id][rating.kind] += 1
            if rating.kind == "warmup":
                continue
            if rating.item_id not in self.column:
                raise ValueError(f"{rating.kind} rating of unknown item {rating.item_id!r}")
            if rating.kind == "retest":
                self.retests_by[rating.rater_id].append(rating)
                continue
            cell = (row[rating.rater_id], self.column[rating.item_id])
            if not np.isnan(self.scores[cell]):
                raise ValueError(f"rater {rating.rater_id!r} has two scored ratings of item "
                                 f"{rating.item_id!r}")
            self.scores[cell] = rating.score
            self.scored_by[rating.rater_id].append(rating)

    def columns(self, predicate: Callable[[ReviewItem], bool]) -> np.ndarray:
        return np.array([i for i, item in enumerate(self.items) if predicate(item)], dtype=int)

    def origin_scores(self, origin: str) -> np.ndarray:
        return self.scores[:, self.columns(lambda item: item.origin == origin)]

    def counts(self) -> dict[str, Any]:
        unrated = np.isnan(self.scores).all(axis=0)
        return {
            "items": {origin: sum(item.origin == origin for item in self.items)
                      for origin in ORIGINS},
            "raters": len(self.raters),
            "ratings": {kind: sum(n[kind] for n in self.n_kind.values()) for kind in KINDS},
            "unrated_items": [item.item_id for item, no in zip(self.items, unrated, strict=True)
                              if no],
        }


def _gate(study: _Study, criteria: GateCriteria, n_boot: int, seed: int) -> dict[str, Any]:
    synthetic = study.origin_scores("synthetic")
    point = _gate_point(synthetic, criteria)
    why = None if point is not None else "no scored ratings of synthetic images"
    intervals: list[tuple[float | None, float | None]] = [(None, None)] * 3
    raters_with = synthetic[~np.isnan(synthetic).all(axis=1)]
    if point is not None and n_boot:
        draws = _bootstrap(lambda r, i: _gate_point(raters_with[np.ix_(r, i)], criteria),
                           raters_with.shape[0], [synthetic.shape[1]], n_boot,
                           np.random.default_rng([seed, 0]))
        intervals = [_interval([d[k] for d in draws]) for k in range(3)]
    estimate = point if point is not None else (None, None, None)
    use_interval = criteria.use_interval
    gate: dict[str, Any] = {
        "mean": _judge(estimate[0], intervals[0], criteria.mean_min, True, use_interval, why),
        "median_share": _judge(estimate[1], intervals[1], criteria.median_share_min, True,
                               use_interval, why),
        "low_share": _judge(estimate[2], intervals[2], criteria.low_share_max, False,
                            use_interval, why),
    }
    unfinished = [rater for rater, done in study.finished.items() if not done]
    gate["raters_finished"] = {"n_raters": len(study.raters),
                               "n_finished": len(study.raters) - len(unfinished),
                               "unfinished": unfinished, "passed": not unfinished}
    gate["mean_per_fst"] = _mean_per_fst(study, criteria, n_boot, seed) if criteria.per_fst \
        else None
    passed = [gate[name]["passed"] for name in ("mean", "median_share", "low_share",
                                                "raters_finished")]
    if gate["mean_per_fst"] is not None:
        passed.append(gate["mean_per_fst"]["passed"])
    gate["passed"] = all(passed)
    return gate


def _mean_per_fst(study: _Study, criteria: GateCriteria, n_boot: int,
                  seed: int) -> dict[str, Any]:
    groups = {}
    for fst in SKIN_TYPES:
        columns = study.columns(lambda item, fst=fst: item.origin == "synthetic"
                                and item.fst == fst)
        if columns.size == 0:
            continue
        scores = study.scores[:, columns]
        scores = scores[~np.isnan(scores).all(axis=1)]
        estimate = _float(np.nanmean(scores)) if scores.size else None
        interval: tuple[float | None, float | None] = (None, None)
        if estimate is not None and n_boot:
            draws = _bootstrap(lambda r, i, s=scores: _nanmean_or_none(s[np.ix_(r, i)]),
                               scores.shape[0], [columns.size], n_boot,
                               np.random.default_rng([seed, 10 + fst]))
            interval = _interval(draws)
        why = None if estimate is not None else "no scored ratings of this skin type's images"
        groups[str(fst)] = {**_judge(estimate, interval, criteria.mean_min, True,
                                     criteria.use_interval, why),
                            "n_items": int(columns.size)}
    if not groups:
        return {"groups": {}, "passed": False, "why": "no synthetic images"}
    return {"groups": groups, "passed": all(g["passed"] for g in groups.values()), "why": None}


def _nanmean_or_none(scores: np.ndarray) -> float | None:
    return float(np.nanmean(scores)) if (~np.isnan(scores)).any() else None


def _breakdown(study: _Study, criteria: GateCriteria, min_group_items: int) -> dict[str, Any]:
    def estimates(scores: np.ndarray, n_items: int) -> dict[str, Any]:
        point = _gate_point(scores, criteria)
        mean, median_share, low_share = point if point is not None else (None, None, None)
        n_rated = int((~np.isnan(scores)).any(axis=0).sum())
        return {"n_items": n_items, "n_rated_items": n_rated, "mean": mean,
                "median_share": median_share, "low_share": low_share,
                "why": None if point is not None else "no scored ratings"}

    def grouped(key: Callable[[ReviewItem], Any]) -> dict[str, Any]:
        groups = {}
        for value in sorted({key(item) for item in study.items if item.origin == "synthetic"}):
            columns = study.columns(lambda item, v=value: item.origin == "synthetic"
                                    and key(item) == v)
            groups[str(value)] = {**estimates(study.scores[:, columns], int(columns.size)),
                                  "few_items": bool(columns.size < min_group_items)}
        return groups

    synthetic = study.origin_scores("synthetic")
    return {
        "by_rater": {rater: estimates(synthetic[[index]], synthetic.shape[1])
                     for index, rater in enumerate(study.raters)},
        "by_fst": grouped(lambda item: item.fst),
        "by_diagnosis": grouped(lambda item: item.diagnosis),
        "min_group_items": min_group_items,
    }


def _synthetic_vs_real(study: _Study, n_boot: int, seed: int) -> dict[str, Any]:
    synthetic, real = study.origin_scores("synthetic"), study.origin_scores("real")
    result: dict[str, Any] = {}
    difference: dict[str, Any] = {"estimate": None, "ci_low": None, "ci_high": None,
                                  "why": None}
    if (~np.isnan(synthetic)).any() and (~np.isnan(real)).any():
        difference["estimate"] = float(np.nanmean(synthetic) - np.nanmean(real))
        if n_boot:
            keep = ~np.isnan(study.scores).all(axis=1)
            syn, rea = synthetic[keep], real[keep]

            def mean_difference(r, i_syn, i_real):
                a, b = _nanmean_or_none(syn[np.ix_(r, i_syn)]), \
                    _nanmean_or_none(rea[np.ix_(r, i_real)])
                return None if a is None or b is None else a - b

            draws = _bootstrap(mean_difference, int(keep.sum()),
                               [synthetic.shape[1], real.shape[1]], n_boot,
                               np.random.default_rng([seed, 1]))
            difference["ci_low"], difference["ci_high"] = _interval(draws)
    else:
        difference["why"] = "needs scored ratings of both synthetic and real images"
    result["mean_difference"] = difference

    # Per-image mean ratings, for images with at least one scored rating.
    rated = ~np.isnan(study.scores).all(axis=0)
    means = np.full(len(study.items), np.nan)
    means[rated] = np.nanmean(study.scores[:, rated], axis=0)
    origins = [item.origin for item in study.items]
    syn_means = [m for m, o, ok in zip(means, origins, rated, strict=True)
                 if ok and o == "synthetic"]
    real_means = [m for m, o, ok in zip(means, origins, rated, strict=True) if ok and o == "real"]
    test: dict[str, Any] = {"u_synthetic": None, "p_value": None, "n_synthetic": len(syn_means),
                            "n_real": len(real_means), "why": None}
    if syn_means and real_means:
        outcome = mannwhitneyu(syn_means, real_means, alternative="two-sided")
        test["u_synthetic"], test["p_value"] = float(outcome.statistic), _float(outcome.pvalue)
    else:
        test["why"] = "needs rated synthetic and rated real images"
    result["mann_whitney"] = test
    result["auc_pooled"] = _auc_real_positive(
        [o for o, ok in zip(origins, rated, strict=True) if ok], means[rated].tolist())
    by_rater = {}
    for index, rater in enumerate(study.raters):
        mine = ~np.isnan(study.scores[index])
        by_rater[rater] = _auc_real_positive(
            [o for o, ok in zip(origins, mine, strict=True) if ok],
            study.scores[index, mine].tolist())
    result["auc_by_rater"] = by_rater
    return result


def _agreement(study: _Study) -> dict[str, Any]:
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


# --- blinding ----------------------------------------------------------------------------------

_FILE_KEYS = ("origin", "bytes", "width", "height", "format", "headers")


def blinding_audit(files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How well the served files' own properties tell real from synthetic.

    Each file is {origin, bytes, width, height, format, headers}. `size_auc` is max(AUC, 1 - AUC)
    of the byte size as a real-vs-synthetic score: 0.5 means size tells nothing. A header is
    listed when its values (absence counts as a value) differ between the two origins, with at
    most 10 of each origin's values shown.
    """
    if not files:
        raise ValueError("no files to audit")
    for index, file in enumerate(files):
        missing = [key for key in _FILE_KEYS if key not in file]
        if missing:
            raise ValueError(f"file {index} is missing {', '.join(missing)}")
        if file["origin"] not in ORIGINS:
            raise ValueError(f"file {index}: origin must be one of {ORIGINS}, "
                             f"got {file['origin']!r}")
        if not _is_int(file["bytes"]) or file["bytes"] < 0:
            raise ValueError(f"file {index}: bytes must be an integer >= 0")
        for key in ("width", "height"):
            if not _is_int(file[key]) or file[key] < 1:
                raise ValueError(f"file {index}: {key} must be an integer >= 1")
        if not isinstance(file["format"], str):
            raise ValueError(f"file {index}: format must be a string")
        if not isinstance(file["headers"], Mapping):
            raise ValueError(f"file {index}: headers must be a mapping")

    origins = [file["origin"] for file in files]
    size_auc: dict[str, Any] = {"value": None, "why": None}
    auc = _auc_real_positive(origins, [file["bytes"] for file in files])
    if auc["value"] is None:
        size_auc["why"] = "needs both real and synthetic files"
    else:
        size_auc["value"] = max(auc["value"], 1.0 - auc["value"])

    headers = [{str(k).lower(): str(v) for k, v in file["headers"].items()} for file in files]
    differing = {}
    for key in sorted({key for h in headers for key in h}):
        values = {origin: {h.get(key) for h, o in zip(headers, origins, strict=True)
                           if o == origin} for origin in ORIGINS}
        if values["real"] and values["synthetic"] and values["real"] != values["synthetic"]:
            differing[key] = {origin: _few_sorted(values[origin]) for origin in ORIGINS}
    dimensions = sorted({(int(f["width"]), int(f["height"])) for f in files})
    formats = sorted({str(f["format"]) for f in files})
    content_types = _few_sorted({h.get("content-type") for h in headers}, limit=None)
    return {
        "n_files": {origin: origins.count(origin) for origin in ORIGINS},
        "size_auc": size_auc,
        "dimensions": [list(d) for d in dimensions],
        "identical_dimensions": len(dimensions) == 1,
        "formats": formats,
        "identical_format": len(formats) == 1,
        "content_types": content_types,
        "identical_content_type": len(content_types) == 1 and content_types[0] is not None,
        "headers_differing_by_origin": differing,
    }


def _few_sorted(values: set[str | None], limit: int | None = 10) -> list[str | None]:
    ordered = sorted(values, key=lambda v: (v is not None, v or ""))
    return ordered if limit is None else ordered[:limit]
