"""Excess FID at equal counts: a Fréchet distance whose null value is zero at every count.

FID between two finite samples of the *same* distribution is far from zero and grows as the
samples shrink (hundreds at 30 images in 2048 dimensions), so raw FIDs of skin types with
different image counts cannot be read against one limit. The excess figure removes that bias
with the real images themselves:

    excess = FID(S, A) - FID(B, A)

where A and B are disjoint random subsets of N real images and S is a random subset of N
synthetic ones, all of the same size N. When the synthetic images come from the real
distribution, S and B are exchangeable given A, so the excess is symmetric about zero whatever
N and the dimension: small types are not penalised for being small. When they do not, the
excess estimates how much farther the synthetic images are than other real images would be,
in FID units, so a limit written for FID keeps its meaning.

The draw is repeated ``repeats`` times (seeded); the figure is the median excess and the spread
the central ``level`` interval of the per-draw values, which is also how far apart two draws
of identical images can land at this N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fairskin.metrics.fid import fid_from_features


@dataclass(frozen=True)
class ExcessFid:
    """The excess FID of one synthetic set over one real set at a common size ``n``."""

    n: int  # images per subset (synthetic, and each of the two real halves)
    repeats: int
    median: float  # the figure: median over repeats of FID(S, A) - FID(B, A)
    low: float  # lower end of the central interval of the per-draw excesses
    high: float  # upper end
    level: float  # the interval's coverage, e.g. 0.95 for the 2.5-97.5 percentiles
    fid_median: float  # median FID(S, A): synthetic against real at n
    null_median: float  # median FID(B, A): real against other real at n (the bias removed)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def equal_count(n_synthetic: int, n_real: int) -> int:
    """The common size N: every synthetic image may be used, and two disjoint real halves."""
    for name, value in (("n_synthetic", n_synthetic), ("n_real", n_real)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return min(n_synthetic, n_real // 2)


def excess_fid(
    synthetic: np.ndarray,
    real: np.ndarray,
    *,
    n: int | None = None,
    repeats: int = 50,
    seed: int | list[int] = 0,
    level: float = 0.95,
) -> ExcessFid:
    """Excess FID of ``synthetic`` (rows) over ``real`` (rows) at size ``n`` per subset.

    ``n`` defaults to `equal_count` of the two row counts; it must be at least 2 and leave two
    disjoint real subsets (2 n <= real rows). Every draw is seeded from ``seed``.
    """
    synthetic = np.asarray(synthetic, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    for name, rows in (("synthetic", synthetic), ("real", real)):
        if rows.ndim != 2 or rows.shape[1] == 0:
            raise ValueError(f"{name} must be a (n, dim) array, got shape {rows.shape}")
    if synthetic.shape[1] != real.shape[1]:
        raise ValueError(f"feature dimensions differ: {synthetic.shape[1]} vs {real.shape[1]}")
    size = equal_count(len(synthetic), len(real)) if n is None else n
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"the common size must be an integer >= 2, got {size!r}")
    if size > len(synthetic) or 2 * size > len(real):
        raise ValueError(
            f"size {size} needs {size} synthetic and {2 * size} real rows; "
            f"got {len(synthetic)} and {len(real)}"
        )
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")

    rng = np.random.default_rng(seed)
    against, null = np.empty(repeats), np.empty(repeats)
    for r in range(repeats):
        halves = rng.permutation(len(real))
        a, b = real[halves[:size]], real[halves[size : 2 * size]]
        s = synthetic[rng.choice(len(synthetic), size, replace=False)]
        against[r] = fid_from_features(s, a)
        null[r] = fid_from_features(b, a)
    excess = against - null
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(excess, [tail, 100 - tail])
    return ExcessFid(
        n=size,
        repeats=repeats,
        median=float(np.median(excess)),
        low=float(low),
        high=float(high),
        level=level,
        fid_median=float(np.median(against)),
        null_median=float(np.median(null)),
    )
