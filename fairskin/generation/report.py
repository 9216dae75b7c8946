"""Batch metrics over the accepted images: FID/KID per skin type, diversity, LPIPS, confidence.

Features stream in: each skin type keeps a running Gaussian (constant memory whatever the
number of images) plus the first ``keep`` feature rows in seed order, which is what KID and the
equal-count excess FID need. Every figure carries the extractor that produced it; a figure
from random weights is reported as uncalibrated and never judged against a success criterion.

Skin types are judged by their excess FID at equal counts, not by the FID at whatever counts
they have; `fairskin.generation.fst_verdicts` states the rule and draws its chart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from fairskin.generation.fst_verdicts import (
    EXCESS_REPEATS,
    FST_RULE,
    INTERVAL_LEVEL,
    fid_limit,
    fst_verdict,
)
from fairskin.metrics.diversity import mean_pairwise_cosine_distance
from fairskin.metrics.excess_fid import equal_count, excess_fid
from fairskin.metrics.fid import fid_from_features, fid_from_statistics
from fairskin.metrics.kid import kernel_inception_distance
from fairskin.metrics.stats import StreamingGaussian

# The planning document's release criteria (the FID limits live with the skin-type verdicts).
LPIPS_LIMIT = 0.15
DIVERSITY_LIMIT = 0.3
CONFIDENCE_LIMIT = 0.7
KEEP_PER_FST = 500  # feature rows kept per skin type for KID and equal-count FID
KEEP_PER_CELL = 1000  # embeddings kept per diagnosis x FST for diversity


@dataclass(frozen=True)
class AcceptedImage:
    diagnosis: str
    fst: int
    inception: np.ndarray  # (dim,) pool features
    clip: np.ndarray  # (dim,) embedding
    metrics: Mapping[str, float | None]


_CHUNK = 256  # rows buffered before a Gaussian update (one dim x dim product per chunk)


@dataclass
class _Accumulator:
    dim: int
    gaussian: StreamingGaussian = field(init=False)
    kept: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gaussian = StreamingGaussian(self.dim)

    def add(self, row: np.ndarray, *, keep: bool) -> None:
        self.pending.append(row)
        if keep and len(self.kept) < KEEP_PER_FST:
            self.kept.append(row)
        if len(self.pending) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.gaussian.update(np.stack(self.pending))
            self.pending.clear()


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    q = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(v.max()),
    }


def _criterion(
    name: str,
    value: float | None,
    limit: float,
    *,
    below: bool,
    calibrated: bool,
    what: str,
    absent: str = "",
) -> dict[str, Any]:
    if absent:
        status, why = "not measurable", absent
    elif value is None:
        status = "not measurable"
        why = "no value (no accepted images or no reference)"
    elif not calibrated:
        status = "not measurable"
        why = "uncalibrated: the feature extractor has random weights"
    else:
        met = value < limit if below else value > limit
        status = "met" if met else "not met"
        why = ""
    return {
        "name": name,
        "what": what,
        "value": value,
        "limit": limit,
        "comparison": "<" if below else ">",
        "status": status,
        "why": why,
    }


def _fid(
    ours: StreamingGaussian,
    our_rows: list[np.ndarray],
    theirs: StreamingGaussian,
    their_rows: np.ndarray | None,
) -> float:
    """FID from the rows when both sides kept all of them (a small SVD, exact), else from the
    streamed Gaussians (two dim x dim eigen-solves)."""
    if their_rows is not None and len(our_rows) == ours.count and len(their_rows) == theirs.count:
        return fid_from_features(np.stack(our_rows), np.asarray(their_rows, dtype=np.float64))
    return fid_from_statistics(ours, theirs)


@dataclass
class _Streamed:
    """What one pass over the accepted images keeps."""

    per_fst: dict[int, _Accumulator] = field(default_factory=dict)
    everything: _Accumulator | None = None
    cells: dict[str, list[np.ndarray]] = field(default_factory=dict)
    cell_counts: dict[str, int] = field(default_factory=dict)
    lpips_values: list[float] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


def _stream(accepted: Iterable[AcceptedImage]) -> _Streamed:
    out = _Streamed()
    for image in accepted:
        features = np.asarray(image.inception, dtype=np.float64)
        acc = out.per_fst.get(image.fst)
        if acc is None:
            acc = out.per_fst[image.fst] = _Accumulator(features.shape[0])
        acc.add(features, keep=True)
        if out.everything is None:
            out.everything = _Accumulator(features.shape[0])
        out.everything.add(features, keep=False)
        key = f"{image.diagnosis}:{image.fst}"
        out.cell_counts[key] = out.cell_counts.get(key, 0) + 1
        if len(out.cells.setdefault(key, [])) < KEEP_PER_CELL:
            out.cells[key].append(np.asarray(image.clip, dtype=np.float64))
        if image.metrics.get("lpips_real") is not None:
            out.lpips_values.append(float(cast(float, image.metrics["lpips_real"])))
        if image.metrics.get("confidence") is not None:
            out.confidences.append(float(cast(float, image.metrics["confidence"])))
    for acc in out.per_fst.values():
        acc.flush()
    if out.everything is not None:
        out.everything.flush()
    return out


def _fst_row(
    fst: int,
    acc: _Accumulator | None,
    reference: StreamingGaussian | None,
    real_rows: np.ndarray | None,
    *,
    kid_subsets: int,
    seed: int,
) -> dict[str, object]:
    row: dict[str, object] = {
        "fst": fst,
        "n": acc.gaussian.count if acc else 0,
        "n_real": reference.count if reference else 0,
        "fid": None,
        "kid": None,
        "kid_std": None,
        "excess": None,
        "limit": fid_limit(fst),
    }
    if acc is None or reference is None or acc.gaussian.count < 2 or reference.count < 2:
        return row
    row["fid"] = _fid(acc.gaussian, acc.kept, reference, real_rows)
    if real_rows is None or len(real_rows) < 2:
        return row
    real = np.asarray(real_rows, dtype=np.float64)
    ours = np.stack(acc.kept)
    if equal_count(len(ours), len(real)) >= 2:
        row["excess"] = excess_fid(
            ours, real, repeats=EXCESS_REPEATS, seed=[seed, fst], level=INTERVAL_LEVEL
        ).to_dict()
    row["kid"], row["kid_std"] = kernel_inception_distance(
        ours,
        real,
        subset_size=min(100, len(ours), len(real)),
        n_subsets=kid_subsets,
        seed=seed,
    )
    return row


def _fst_rows(
    per_fst: Mapping[int, _Accumulator],
    reference: Mapping[int, StreamingGaussian],
    reference_features: Mapping[int, np.ndarray],
    *,
    kid_subsets: int,
    seed: int,
    calibrated: bool,
) -> list[dict[str, object]]:
    """Per skin type: raw FID and KID (shown), excess FID at equal N and its verdict."""
    rows = []
    for fst in sorted(set(per_fst) | set(reference)):
        row = _fst_row(
            fst,
            per_fst.get(fst),
            reference.get(fst),
            reference_features.get(fst),
            kid_subsets=kid_subsets,
            seed=seed,
        )
        excess = cast("dict[str, Any] | None", row["excess"])
        if not calibrated:
            status, why = "not measurable", "uncalibrated: the feature extractor has random weights"
        else:
            status, why = fst_verdict(excess, fid_limit(fst))
        row["figure"] = excess["median"] if excess else None
        row["status"], row["why"] = status, why
        rows.append(row)
    return rows


def _overall_distances(
    streamed: _Streamed,
    reference: Mapping[int, StreamingGaussian],
    reference_features: Mapping[int, np.ndarray],
    *,
    kid_subsets: int,
    seed: int,
) -> tuple[float | None, float | None]:
    """FID and KID of all accepted images against all real ones."""
    per_fst = streamed.per_fst
    overall = streamed.everything.gaussian if streamed.everything is not None else None
    overall_fid = None
    if overall is not None and overall.count >= 2 and reference:
        pooled = StreamingGaussian(overall.dim)
        for gaussian in reference.values():
            pooled.merge(gaussian)
        ref_rows = [reference_features.get(f) for f in sorted(reference)]
        complete = all(r is not None for r in ref_rows)
        if pooled.count >= 2:
            overall_fid = _fid(
                overall,
                [row for f in sorted(per_fst) for row in per_fst[f].kept],
                pooled,
                np.concatenate(cast("list[np.ndarray]", ref_rows)) if complete else None,
            )
    overall_kid = None
    kept_all = [row for acc in per_fst.values() for row in acc.kept]
    ref_all = [row for f in sorted(reference_features) for row in reference_features[f]]
    if len(kept_all) >= 2 and len(ref_all) >= 2:
        overall_kid = kernel_inception_distance(
            np.stack(kept_all),
            np.asarray(ref_all),
            subset_size=min(100, len(kept_all), len(ref_all)),
            n_subsets=kid_subsets,
            seed=seed,
        )[0]
    return overall_fid, overall_kid


def _criteria(
    fst_rows: list[dict[str, object]],
    diversity: Mapping[str, float | None],
    lpips_summary: dict[str, float] | None,
    confidence_summary: dict[str, float] | None,
    provenance: Mapping[str, Mapping[str, object]],
) -> list[dict[str, object]]:
    """The planning document's success criteria, each with its status."""
    calibrated = {name: bool(p.get("calibrated")) for name, p in provenance.items()}
    criteria: list[dict[str, object]] = [
        {
            "name": f"FID FST {row['fst']}",
            "what": (
                "excess FID at equal N: FID(synthetic, real) minus FID(real, other real), "
                "median of seeded draws, N = min(synthetic, real / 2) per subset"
            ),
            "value": row["figure"],
            "limit": row["limit"],
            "comparison": "<",
            "status": row["status"],
            "why": row["why"],
        }
        for row in fst_rows
    ]
    criteria.append(
        _criterion(
            "LPIPS",
            lpips_summary["mean"] if lpips_summary else None,
            LPIPS_LIMIT,
            below=True,
            calibrated=calibrated.get("lpips", False),
            what="mean LPIPS of accepted images to real images of the same type",
        )
    )
    measured = [v for v in diversity.values() if v is not None]
    criteria.append(
        _criterion(
            "diversity",
            min(measured) if measured else None,
            DIVERSITY_LIMIT,
            below=False,
            calibrated=calibrated.get("clip", False),
            what="lowest mean pairwise CLIP cosine distance over diagnosis x FST cells",
        )
    )
    criteria.append(
        _criterion(
            "classifier confidence",
            confidence_summary["mean"] if confidence_summary else None,
            CONFIDENCE_LIMIT,
            below=False,
            calibrated=calibrated.get("classifier", False),
            what="mean confidence of the confidence model in the intended diagnosis",
            absent=""
            if "classifier" in provenance
            else "no confidence model was set when the "
            "batch was prepared (mark a baseline classifier run as the confidence model)",
        )
    )
    return criteria


def batch_report(
    accepted: Iterable[AcceptedImage],
    *,
    reference: Mapping[int, StreamingGaussian],
    reference_features: Mapping[int, np.ndarray],
    provenance: Mapping[str, Mapping[str, object]],
    kid_subsets: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """The batch's metrics, per skin type and overall, with their success criteria.

    ``accepted`` must come in seed order within each stratum (the order acceptance used), so
    the rows kept for KID and the excess FID are the same every time. ``reference`` holds the
    real images' Gaussian per skin type, ``reference_features`` a sample of their rows.
    ``provenance`` maps "inception", "clip", "lpips", "classifier" to their extractor records
    (name, weights, calibrated, label).
    """
    streamed = _stream(accepted)
    overall = streamed.everything.gaussian if streamed.everything is not None else None
    fst_rows = _fst_rows(
        streamed.per_fst,
        reference,
        reference_features,
        kid_subsets=kid_subsets,
        seed=seed,
        calibrated=bool(provenance.get("inception", {}).get("calibrated")),
    )
    overall_fid, overall_kid = _overall_distances(
        streamed, reference, reference_features, kid_subsets=kid_subsets, seed=seed
    )
    cell_counts = streamed.cell_counts
    diversity = {
        key: (mean_pairwise_cosine_distance(np.stack(vectors)) if len(vectors) >= 2 else None)
        for key, vectors in sorted(streamed.cells.items())
    }
    lpips_summary = _summary(streamed.lpips_values)
    confidence_summary = _summary(streamed.confidences)
    criteria = _criteria(fst_rows, diversity, lpips_summary, confidence_summary, provenance)

    return {
        "fst": fst_rows,
        "fst_rule": dict(FST_RULE),
        "overall": {"n": overall.count if overall else 0, "fid": overall_fid, "kid": overall_kid},
        "diversity": diversity,
        "cell_counts": cell_counts,
        "lpips": lpips_summary,
        "confidence": confidence_summary,
        "criteria": criteria,
        "provenance": {name: dict(p) for name, p in provenance.items()},
    }
