"""The one on-disk format of a scoring reference's statistics, readable without torch.

A reference folder (``Reference.save``) holds ``reference.json`` (metadata, and per skin type
the Gaussian's count and dim) and ``arrays.npz`` (per skin type the Gaussian's mean and upper
triangle of M2, and the raw Inception feature sample for KID, plus the other arrays scoring
needs). The batch report reads the per-skin-type statistics with ``read_statistics`` on a CPU
worker; scoring loads the whole reference with ``Reference.load``. Both go through the key
names below, so there is one scheme.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fairskin.metrics.stats import StreamingGaussian

REFERENCE_FORMAT = 1
META_FILE = "reference.json"
ARRAYS_FILE = "arrays.npz"


def mean_key(fst: int) -> str:
    return f"gaussian_{fst}_mean"


def m2_upper_key(fst: int) -> str:
    return f"gaussian_{fst}_m2_upper"


def sample_key(fst: int) -> str:
    return f"inception_sample_{fst}"


def gaussian_parts(gaussian: StreamingGaussian) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The JSON part (format, dim, count) and the mean and M2 upper-triangle arrays."""
    stored = gaussian.to_dict()
    mean = np.asarray(stored.pop("mean"))
    upper = np.asarray(stored.pop("m2_upper"))
    return stored, mean, upper


def read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no scoring reference in {folder} ({META_FILE} missing)")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"unsupported scoring reference format {meta.get('format')!r}")
    return meta


def gaussians_from(meta: dict[str, Any], arrays: Any) -> dict[int, StreamingGaussian]:
    """Per skin type, the Gaussian stored under ``meta["gaussians"]`` and its arrays."""
    return {
        int(fst): StreamingGaussian.from_dict(
            {
                **stats,
                "mean": arrays[mean_key(int(fst))],
                "m2_upper": arrays[m2_upper_key(int(fst))],
            }
        )
        for fst, stats in meta["gaussians"].items()
    }


def read_statistics(
    folder: str | Path,
) -> tuple[dict[int, StreamingGaussian], dict[int, np.ndarray]]:
    """Per skin type, the real images' Inception Gaussian and feature sample (numpy only)."""
    folder = Path(folder)
    meta = read_meta(folder)
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
        gaussians = gaussians_from(meta, arrays)
        features = {fst: arrays[sample_key(fst)] for fst in gaussians}
    return gaussians, features
