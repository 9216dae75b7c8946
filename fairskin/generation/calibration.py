"""Filter thresholds calibrated on held-out real images, and the share of real images they reject.

A distance check (per-image FID, LPIPS to real images, memorization) has no meaningful absolute
scale: a per-image Mahalanobis distance in 2,048 Inception dimensions is ~45 for an image of the
reference distribution itself when the reference is large, and in the hundreds or thousands when
it holds fewer images than dimensions. So by default a check's limit is a percentile of the same
measure taken on **held-out real images**: real images of the model's datasets that are neither
in the scoring reference nor among the run's training images, measured exactly as candidates are.

The percentile ``p`` is the share of real images that pass: the limit is the p-th percentile for
a measure where higher is worse and the (100 - p)-th where lower is worse (memorization).

Held-out images (`split_held_out`): per skin type up to ``HELD_OUT_PER_TYPE`` of the type's real
images that did not train the model, seeded, never more than half of the type's real images (the
reference keeps the rest). A calibrated limit needs ``MIN_HELD_OUT_PER_TYPE`` values: a skin type
with fewer is pooled with its nearest types (`calibration_pool`: V with VI first, then IV; VI
with V, then IV; ties go to the darker neighbour) until the pool has enough, up to all six types.
With fewer even then the check is not judged on that type, and the batch says so.

Each threshold's rejection share on real images is measured out of sample (`rejection_share`):
for a calibrated limit by 2-fold cross-fitting (the held-out values are split in two seeded halves,
the limit from each half is applied to the other, and the rejections of both are counted), so
the figure is not (100 - p) % by construction; for an absolute or reference-relative limit, which
does not depend on the held-out images, as the share of all of them beyond it. Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fairskin.generation.checks import Threshold
from fairskin.labels import FST_TYPES, fst_roman

MIN_HELD_OUT_PER_TYPE = 20  # values a calibrated limit is a percentile of (after pooling)
HELD_OUT_PER_TYPE = 200  # held-out real images drawn per skin type, at most
SHARE_METHOD = {
    "calibrated": "out of sample: 2-fold cross-fitting on the held-out images (the limit from "
    "each seeded half applied to the other half)",
    "absolute": "all held-out images (the limit does not depend on them)",
    "relative": "all held-out images (the limit comes from the reference, not from them)",
}


def limit_from(
    values: Sequence[float] | np.ndarray, percentile: float, higher_is_worse: bool
) -> float:
    """The limit that lets ``percentile`` % of ``values`` pass (`Threshold.resolve`)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    threshold = Threshold(None, "calibrated", percentile)
    return threshold.resolve(values, higher_is_worse=higher_is_worse)


def rejected(values: np.ndarray, limit: float, higher_is_worse: bool) -> np.ndarray:
    """Which values a limit rejects (the pass rule of `checks.threshold_check`)."""
    return values > limit if higher_is_worse else values < limit


def calibration_pool(
    fst: int, counts: Mapping[int, int], minimum: int = MIN_HELD_OUT_PER_TYPE
) -> tuple[int, ...]:
    """The skin types whose held-out values calibrate ``fst``: the type itself, then its nearest
    types (ties to the darker one) until ``minimum`` values are pooled; sorted. It may still hold
    fewer than ``minimum`` when all six types together do."""
    order = sorted(FST_TYPES, key=lambda g: (abs(g - fst), -g))
    pool: list[int] = []
    for g in order:
        pool.append(g)
        if sum(counts.get(t, 0) for t in pool) >= minimum:
            break
    return tuple(sorted(pool))


def pool_label(pool: Sequence[int]) -> str:
    """FST V-VI for a contiguous pool, FST II, V for another."""
    ordered = sorted(pool)
    if len(ordered) > 1 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"FST {fst_roman(ordered[0])}-{fst_roman(ordered[-1])}"
    return "FST " + ", ".join(fst_roman(g) for g in ordered)


def pooled_values(per_type: Mapping[int, np.ndarray], pool: Sequence[int]) -> np.ndarray:
    parts = [np.asarray(per_type[g], dtype=float) for g in pool if g in per_type]
    return np.concatenate(parts) if parts else np.zeros(0)


def rejection_share(
    values: np.ndarray,
    *,
    mode: str,
    percentile: float,
    higher_is_worse: bool,
    limit: float | None,
    seed: int,
) -> float | None:
    """The share of held-out real values the check would reject, out of sample (module doc)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None
    if mode != "calibrated":
        if limit is None:
            return None
        return float(rejected(values, limit, higher_is_worse).mean())
    if values.size < 2:
        return None
    order = np.random.default_rng([seed, values.size]).permutation(values.size)
    halves = (values[order[: values.size // 2]], values[order[values.size // 2 :]])
    count = 0
    for fit, other in (halves, halves[::-1]):
        count += int(
            rejected(other, limit_from(fit, percentile, higher_is_worse), higher_is_worse).sum()
        )
    return count / values.size


def split_held_out(
    ids: Sequence[int], training: set[int], *, seed: int, fst: int, cap: int = HELD_OUT_PER_TYPE
) -> tuple[list[int], list[int]]:
    """One skin type's real image ids -> (reference ids, held-out ids), disjoint, input order.

    Held out: a seeded choice of up to ``cap`` ids that are not in ``training``, never more than
    half of ``ids``; the reference keeps every other id."""
    eligible = [i for i in ids if i not in training]
    n = min(cap, len(eligible), len(ids) // 2)
    rng = np.random.default_rng([seed, int.from_bytes(b"held-out", "little"), fst])
    chosen = set(rng.choice(eligible, size=n, replace=False).tolist()) if n else set()
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


def summarise(
    *,
    thresholds: Mapping[str, Any],
    higher_is_worse: Mapping[str, bool],
    held_out: Mapping[str, Mapping[int, np.ndarray]],
    held_out_counts: Mapping[int, int],
    reference_limits: Mapping[str, Mapping[int, float | None]],
    applied: Mapping[str, Mapping[str, Any]],
    fsts: Sequence[int],
    percentile: float,
    seed: int,
) -> dict[str, Any]:
    """Per check and skin type of the batch: the limit, how it was obtained, and the share of
    held-out real images it would reject (JSON-ready; stored on the batch and in its report).

    ``thresholds`` maps a check to its `Threshold`; ``reference_limits`` gives a relative
    (real-vs-real) limit per skin type; ``applied`` is `Scorer.calibration()`."""
    rows = []
    for name, threshold in thresholds.items():
        worse = higher_is_worse[name]
        per_type = held_out.get(name, {})
        counts = {g: len(v) for g, v in per_type.items()}
        for fst in fsts:
            pool = calibration_pool(fst, counts) if threshold.mode == "calibrated" else (fst,)
            values = pooled_values(per_type, pool)
            row: dict[str, Any] = {
                "check": name,
                "fst": fst,
                "mode": threshold.mode,
                "percentile": threshold.percentile if threshold.mode != "absolute" else None,
                "direction": "at most" if worse else "at least",
                "pool": list(pool),
                "pool_label": pool_label(pool),
                "held_out": int(values.size),
                "threshold": None,
                "rejects_held_out": None,
                "rejects_percent": None,
                "share_method": SHARE_METHOD[threshold.mode],
                "calibrated": bool(applied[name]["calibrated"]),
                "applied": bool(applied[name]["applied"]),
                "extractor": applied[name]["extractor"],
                "status": "ok",
            }
            if threshold.mode == "absolute":
                row["threshold"] = threshold.value
                row["source"] = f"absolute value {threshold.value:g} (set explicitly)"
            elif threshold.mode == "relative":
                row["threshold"] = reference_limits.get(name, {}).get(fst)
                row["source"] = (
                    f"percentile {threshold.percentile:g} of the reference's own real-vs-real "
                    f"values of FST {fst_roman(fst)}"
                )
            elif values.size >= MIN_HELD_OUT_PER_TYPE:
                row["threshold"] = limit_from(values, threshold.percentile, worse)
                row["source"] = (
                    f"percentile {threshold.percentile:g} of {values.size} held-out real images "
                    f"of {pool_label(pool)}" + (" (pooled)" if len(pool) > 1 else "")
                )
            else:
                row["status"] = "too few held-out images"
                row["source"] = (
                    f"not set: {values.size} held-out real images of {pool_label(pool)}, "
                    f"fewer than the {MIN_HELD_OUT_PER_TYPE} a calibrated threshold needs; "
                    "the check is measured but does not reject"
                )
            if row["threshold"] is not None:
                row["rejects_held_out"] = rejection_share(
                    values,
                    mode=threshold.mode,
                    percentile=threshold.percentile,
                    higher_is_worse=worse,
                    limit=row["threshold"],
                    seed=seed,
                )
            share = row["rejects_held_out"]
            row["rejects_percent"] = None if share is None else round(100.0 * share, 1)
            rows.append(row)
    return {
        "percentile": percentile,
        "min_per_type": MIN_HELD_OUT_PER_TYPE,
        "cap_per_type": HELD_OUT_PER_TYPE,
        "held_out_per_type": {str(g): int(n) for g, n in sorted(held_out_counts.items())},
        "held_out_total": int(sum(held_out_counts.values())),
        "disjoint_from": ["the scoring reference", "the model's training images"],
        "pooling": "a skin type with fewer held-out values than the minimum is pooled with its "
        "nearest types (ties to the darker one: V with VI, then IV) until the pool has enough",
        "checks": rows,
        "too_few": [{"check": r["check"], "fst": r["fst"]} for r in rows if r["status"] != "ok"],
    }
