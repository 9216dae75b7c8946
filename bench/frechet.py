"""Fréchet distance at Inception's 2048 dimensions: the reference implementations' general
matrix square root (scipy.linalg.sqrtm of S1 S2, with an eps * I offset when singular) against
FairSkin's symmetric eigen-solve (`frechet_distance`) and its small-SVD path from raw rows
(`fid_from_features`), on the same features in one run.

Usage: .venv/bin/python bench/frechet.py [--dim 2048] [--rows 40,600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairskin.metrics.fid import fid_from_features, frechet_distance


def sqrtm_reference(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid's recipe: sqrtm(S1 S2); on a singular product retry with eps * I added."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        offset = np.eye(s1.shape[0]) * eps
        root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def timed(fn, repeats: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--rows", default="40,600")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy "
        f"{scipy.__version__}, {platform.machine()}"
    )
    print(
        "| rows per set | sqrtm (reference) s | eigen (frechet_distance) s | "
        "SVD of rows (fid_from_features) s | eigen speed-up | values |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in (int(r) for r in args.rows.split(",")):
        a = rng.normal(size=(n, args.dim))
        b = rng.normal(size=(n, args.dim)) * 1.1 + 0.05
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        t_ref, v_ref = timed(lambda a=a, b=b: sqrtm_reference(a, b), args.repeats)
        t_eig, v_eig = timed(
            lambda a=a, b=b, s1=s1, s2=s2: frechet_distance(a.mean(0), s1, b.mean(0), s2),
            args.repeats,
        )
        t_svd, v_svd = timed(lambda a=a, b=b: fid_from_features(a, b), args.repeats)
        print(
            f"| {n} | {t_ref:.2f} | {t_eig:.2f} | {t_svd:.3f} | {t_ref / t_eig:.1f}x | "
            f"{v_ref:.3f} / {v_eig:.3f} / {v_svd:.3f} |"
        )


if __name__ == "__main__":
    main()
