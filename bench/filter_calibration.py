"""Per-image "FID" filter on simulated 2048-d Inception-like features: how many images drawn
from the reference's own distribution pass the old absolute limit (30) and a limit calibrated
on held-out images of that distribution, and what share of held-out images the calibrated limit
is reported to reject (2-fold cross-fitted, `fairskin.generation.calibration`).

Every draw goes through the code a batch runs: `StreamingGaussian` for the reference,
`feature_distances_to_reference` with the reference's ridge (FID_EPS) for every image,
`limit_from` for the calibrated limit and `rejection_share` for the reported share.

Usage: .venv/bin/python bench/filter_calibration.py [--references 300,3000]
       [--held-out 20,40,200] [--percentiles 90,95,99] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairskin.generation.calibration import limit_from, rejection_share
from fairskin.generation.reference import FID_EPS
from fairskin.metrics.fid import feature_distances_to_reference
from fairskin.metrics.stats import StreamingGaussian

DIM = 2048
SYNTHETIC = 1000
OTHER = 500
ABSOLUTE = 30.0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def one_world(n_reference: int, n_held_out: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, n_reference, n_held_out])
    mean = rng.normal(0.0, 1.0, DIM)
    scale = 1.0 / np.sqrt(1.0 + np.arange(DIM) / 64.0)

    def draw(n: int, shift: float = 0.0, spread: float = 1.0) -> np.ndarray:
        return mean + shift * scale + rng.standard_normal((n, DIM)) * scale * spread

    gaussian = StreamingGaussian(DIM)
    gaussian.update(draw(n_reference))
    distances = {
        "held_out": draw(n_held_out),
        "synthetic": draw(SYNTHETIC),
        "other": draw(OTHER, shift=0.5, spread=1.3),
    }
    return {
        name: feature_distances_to_reference(rows, gaussian, eps=FID_EPS)
        for name, rows in distances.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=_ints, default=[300, 3000])
    parser.add_argument("--held-out", type=_ints, default=[20, 40, 200])
    parser.add_argument("--percentiles", type=_floats, default=[90.0, 95.0, 99.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        "| reference | held-out | median distance (same distribution) | pass at absolute 30 "
        "| percentile | pass, calibrated (mean, range) | reported held-out rejection "
        "| pass, other distribution |"
    )
    print("|---:|---:|---:|---:|---:|---|---|---:|")
    for n_reference in args.references:
        for n_held_out in args.held_out:
            worlds = [
                one_world(n_reference, n_held_out, args.seed + r) for r in range(args.repeats)
            ]
            median = statistics.median(float(np.median(w["synthetic"])) for w in worlds)
            absolute = statistics.mean(float((w["synthetic"] <= ABSOLUTE).mean()) for w in worlds)
            for p in args.percentiles:
                passes, reported, other = [], [], []
                for r, w in enumerate(worlds):
                    limit = limit_from(w["held_out"], p, higher_is_worse=True)
                    passes.append(float((w["synthetic"] <= limit).mean()))
                    other.append(float((w["other"] <= limit).mean()))
                    share = rejection_share(
                        w["held_out"],
                        mode="calibrated",
                        percentile=p,
                        higher_is_worse=True,
                        limit=limit,
                        seed=r,
                    )
                    reported.append(float(share or 0.0))
                print(
                    f"| {n_reference} | {n_held_out} | {median:.0f} | {absolute:.1%} | {p:g} "
                    f"| {statistics.mean(passes):.1%} ({min(passes):.1%}-{max(passes):.1%}) "
                    f"| {statistics.mean(reported):.1%} ({min(reported):.1%}-{max(reported):.1%}) "
                    f"| {statistics.mean(other):.1%} |"
                )


if __name__ == "__main__":
    main()
