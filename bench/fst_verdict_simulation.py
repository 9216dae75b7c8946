"""Pass rates of the per-skin-type FID verdict (fairskin.generation.fst_verdicts) by seeded
simulation with known truth, for docs/validation/fst-verdicts.md.

Features are Gaussian with a 1/i eigenvalue spectrum of the given trace; the synthetic set's
mean moves by a vector of squared length ``true FID``, which is then its population FID to the
real distribution. Each row verdicts ``seeds`` independent data sets against the limit 20.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/fst_verdict_simulation.py \\
        DIM SEEDS TRACE SYNTHETIC/REAL[,...] TRUE_FID[,...]

e.g. ``64 100 150 500/500,30/40 0,30,40``. Prints a Markdown table.
"""

from __future__ import annotations

import sys

import numpy as np

from fairskin.generation.fst_verdicts import EXCESS_REPEATS, FID_LIMIT, fst_verdict
from fairskin.metrics.excess_fid import excess_fid
from fairskin.metrics.fid import fid_from_features


def main(argv: list[str]) -> None:
    dim, seeds, trace = int(argv[0]), int(argv[1]), float(argv[2])
    sizes = [tuple(int(v) for v in pair.split("/")) for pair in argv[3].split(",")]
    shifts = [float(v) for v in argv[4].split(",")]
    spectrum = 1.0 / np.arange(1, dim + 1)
    spectrum *= trace / spectrum.sum()

    def draw(rng: np.random.Generator, n: int, true_fid: float = 0.0) -> np.ndarray:
        return rng.normal(size=(n, dim)) * np.sqrt(spectrum) + np.sqrt(true_fid / dim)

    print(
        "| dim | synthetic / real kept | N | true FID | met | not met | not measurable "
        "| raw FID (mean) | median excess: mean (sd) | interval half-width (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_synthetic, n_real in sizes:
        for shift in shifts:
            counts = {"met": 0, "not met": 0, "not measurable": 0}
            medians, half_widths, raw = [], [], []
            n = 0
            for seed in range(seeds):
                rng = np.random.default_rng([seed, n_synthetic, n_real, int(shift)])
                synthetic, real = draw(rng, n_synthetic, shift), draw(rng, n_real)
                raw.append(fid_from_features(synthetic, real))
                excess = excess_fid(synthetic, real, repeats=EXCESS_REPEATS, seed=seed)
                counts[fst_verdict(excess.to_dict(), FID_LIMIT)[0]] += 1
                medians.append(excess.median)
                half_widths.append((excess.high - excess.low) / 2)
                n = excess.n
            print(
                f"| {dim} | {n_synthetic} / {n_real} | {n} | {shift:g} "
                f"| {counts['met']}/{seeds} | {counts['not met']}/{seeds} "
                f"| {counts['not measurable']}/{seeds} | {np.mean(raw):.1f} "
                f"| {np.mean(medians):.2f} ({np.std(medians):.2f}) | {np.mean(half_widths):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
