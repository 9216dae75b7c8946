"""Held-out real images measured as candidates are, and the batch's filter calibration.

The prepare job draws them (none in the scoring reference, none among the training images),
measures them with the batch's `Scorer` once its reference is built, and stores the values in
the reference (`Reference.held_out`); calibrated thresholds are percentiles of them and the
batch reports, per check, the share of them its threshold would reject
(`fairskin.generation.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fairskin.generation.calibration import summarise
from fairskin.generation.perceptual import as_float, load_uint8
from fairskin.generation.scoring import Scorer
from fairskin.generation.scoring_config import HIGHER_IS_WORSE, THRESHOLD_CHECKS
from fairskin.labels import FST_TYPES
from fairskin.progress import Progress

PHASE_HELD_OUT = "Held-out real images (calibrated thresholds)"


def measure_held_out(
    scorer: Scorer,
    items: Sequence[tuple[str, int, str]],
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> tuple[dict[str, dict[int, np.ndarray]], dict[int, int]]:
    """Held-out real images (path, FST, diagnosis), none of them in the scorer's reference or
    training images, measured exactly as candidates are: per threshold check and FST the finite
    values (`Reference.held_out`), and per FST the number of images."""
    bad = sorted({fst for _, fst, _ in items if fst not in FST_TYPES}, key=str)
    if bad:
        raise ValueError(f"held-out images need a Fitzpatrick type 1-6, got {bad}")
    held_out = {str(path) for path, _, _ in items}
    overlap = held_out & set(scorer.reference.training_paths)
    if overlap:
        raise ValueError(f"held-out images must not be training images: {sorted(overlap)[:3]}")
    collected: dict[str, dict[int, list[float]]] = {name: {} for name in THRESHOLD_CHECKS}
    counts: dict[int, int] = {}
    if progress is not None:
        progress.phase(PHASE_HELD_OUT, total=len(items))
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        pixels = as_float(load_uint8([path for path, _, _ in chunk], scorer.size))
        fsts = [fst for _, fst, _ in chunk]
        measured = scorer.measure(pixels, diagnoses=[dx for _, _, dx in chunk], fsts=fsts)
        for i, fst in enumerate(fsts):
            counts[fst] = counts.get(fst, 0) + 1
            for name in THRESHOLD_CHECKS:
                value = float(measured[name][i])
                if math.isfinite(value):
                    collected[name].setdefault(fst, []).append(value)
        if progress is not None:
            progress.update(start + len(chunk), len(items), "images")
    values = {
        name: {fst: np.asarray(v, dtype=np.float64) for fst, v in sorted(per_fst.items())}
        for name, per_fst in collected.items()
    }
    return values, dict(sorted(counts.items()))


def filter_calibration(scorer: Scorer, fsts: Sequence[int], percentile: float) -> dict[str, Any]:
    """Per threshold check and skin type: the limit the scorer applies, how it was obtained and
    the share of the reference's held-out real images it would reject (`calibration.summarise`)."""
    thresholds = {name: getattr(scorer.config, name) for name in THRESHOLD_CHECKS}
    reference_limits: dict[str, dict[int, float | None]] = {}
    for name, threshold in thresholds.items():
        if threshold.mode == "relative":
            reference_limits[name] = {}
            for fst in fsts:
                values = scorer.reference.values_for(name, fst)
                reference_limits[name][fst] = (
                    threshold.resolve(values, higher_is_worse=HIGHER_IS_WORSE[name])
                    if values is not None and len(values)
                    else None
                )
    return summarise(
        thresholds=thresholds,
        higher_is_worse=HIGHER_IS_WORSE,
        held_out=scorer.reference.held_out,
        held_out_counts=scorer.reference.held_out_counts,
        reference_limits=reference_limits,
        applied=scorer.calibration(),
        fsts=sorted({int(f) for f in fsts}),
        percentile=percentile,
        seed=scorer.reference.seed,
    )
