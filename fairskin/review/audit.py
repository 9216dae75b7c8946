"""The blinding audit: whether the served files' own properties (byte length, payload length,
JPEG grid and double-compression statistics, dimensions, format, headers) give an image's
origin away. Its real-vs-synthetic AUC is also the one the gate report uses to measure how well
ratings separate the origins.

Each numeric signal is scored as an AUC of real vs synthetic and tested with a permutation
p-value of the folded statistic max(AUC, 1 - AUC): the origins are shuffled ``n_permutations``
times (seeded) and p = (1 + #{folded null >= folded observed}) / (1 + n_permutations). The
folded statistic's null mean is above 0.5 (more so in small studies), which is why it is
compared with its own permutation distribution, not with 0.5. An encoding signal with p below
``alpha`` (default 0.01: at most about one clean study in a hundred is flagged by chance per
signal) is an encoding failure, as are differing dimensions, formats, content types or headers.
Content signals (sharpness, high-frequency energy) are reported with their AUCs and p-values
and never fail anything: raters are meant to judge what images show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from fairskin.review.signals import CONTENT_SIGNALS, ENCODING_SIGNALS
from fairskin.review.study import ORIGINS, is_int

DEFAULT_ALPHA = 0.01
DEFAULT_PERMUTATIONS = 2000
_CELLS_PER_CHUNK = 4_000_000  # permutation matrix entries held at once
_FILE_SIGNALS = ("bytes", "payload_bytes")  # top-level numeric keys of a file
SIGNAL_LABELS = {
    "bytes": "byte length",
    "payload_bytes": "payload length",
    "blockiness": "8x8 grid blockiness",
    "double_compression": "double-compression histogram",
    "sharpness": "sharpness",
    "high_frequency": "high-frequency energy",
}


def auc_real_positive(origins: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
    n_real = sum(origin == "real" for origin in origins)
    n_synthetic = len(origins) - n_real
    result: dict[str, Any] = {
        "value": None,
        "n_real": n_real,
        "n_synthetic": n_synthetic,
        "why": None,
    }
    if n_real == 0 or n_synthetic == 0:
        result["why"] = "needs rated real and rated synthetic images"
    else:
        is_real = [origin == "real" for origin in origins]
        result["value"] = float(roc_auc_score(is_real, scores))
    return result


def permutation_auc(
    origins: Sequence[str],
    scores: Sequence[float],
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """The folded real-vs-synthetic AUC of ``scores`` and its permutation p-value.

    Keys: ``value`` (max(AUC, 1 - AUC)), ``auc`` (real as the positive class), ``p_value``,
    ``null_mean`` (the folded statistic's mean under shuffled origins), ``n_permutations``
    and ``why`` (set when there is nothing to compare). Ties get average ranks. Vectorised:
    each permutation draws a random set of "real" positions and sums their ranks.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    is_real = np.array([origin == "real" for origin in origins], dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != is_real.shape:
        raise ValueError("origins and scores must have the same length")
    n_real = int(is_real.sum())
    n_other = len(values) - n_real
    result: dict[str, Any] = {
        "value": None,
        "auc": None,
        "p_value": None,
        "null_mean": None,
        "n_permutations": n_permutations,
        "why": None,
    }
    if n_real == 0 or n_other == 0:
        result["why"] = "needs both real and synthetic files"
        return result
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite numbers")
    ranks = rankdata(values)
    offset, pairs = n_real * (n_real + 1) / 2, n_real * n_other

    def folded(rank_sums: Any) -> Any:
        auc = (rank_sums - offset) / pairs
        return np.maximum(auc, 1.0 - auc)

    auc = float((ranks[is_real].sum() - offset) / pairs)
    observed = max(auc, 1.0 - auc)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // len(values))
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, chunk):
        count = min(chunk, n_permutations - start)
        keys = rng.random((count, len(values)))
        chosen = np.argpartition(keys, n_real - 1, axis=1)[:, :n_real]
        null[start : start + count] = folded(ranks[chosen].sum(axis=1))
    exceed = int(np.count_nonzero(null >= observed - 1e-12))
    result.update(
        value=observed,
        auc=auc,
        p_value=(1 + exceed) / (1 + n_permutations),
        null_mean=float(null.mean()),
    )
    return result


_FILE_KEYS = ("origin", "bytes", "width", "height", "format", "headers")


def blinding_audit(
    files: Sequence[Mapping[str, Any]],
    *,
    alpha: float = DEFAULT_ALPHA,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """How well the served files' own properties tell real from synthetic.

    Each file is {origin, bytes, width, height, format, headers} with optional
    ``payload_bytes`` and ``signals`` ({name: number}, see ``fairskin.review.signals``).
    ``signals`` in the result holds ``permutation_auc`` of every numeric signal that all files
    carry, with its ``kind`` ("encoding" or "content") and ``failed``; ``size_auc`` is the byte
    length's entry. A header is listed when its values (absence counts as a value) differ
    between the two origins, with at most 10 of each origin's values shown.
    ``encoding_failures`` lists why the encoding gives origin away (empty when clean).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    _check_files(files)
    origins = [file["origin"] for file in files]
    signals = _signal_table(files)
    results: dict[str, Any] = {}
    failures: list[str] = []
    for name, scores in signals.items():
        entry = permutation_auc(origins, scores, n_permutations=n_permutations, seed=seed)
        kind = "content" if name in CONTENT_SIGNALS else "encoding"
        failed = kind == "encoding" and entry["p_value"] is not None and entry["p_value"] < alpha
        results[name] = {"kind": kind, **entry, "failed": failed}
        if failed:
            failures.append(
                f"{SIGNAL_LABELS.get(name, name)} separates real from synthetic (AUC "
                f"{entry['value']:.3f}, permutation p {entry['p_value']:.4f} < alpha {alpha})"
            )

    headers = [{str(k).lower(): str(v) for k, v in file["headers"].items()} for file in files]
    differing = {}
    for key in sorted({key for h in headers for key in h}):
        values = {
            origin: {h.get(key) for h, o in zip(headers, origins, strict=True) if o == origin}
            for origin in ORIGINS
        }
        if values["real"] and values["synthetic"] and values["real"] != values["synthetic"]:
            differing[key] = {origin: _few_sorted(values[origin]) for origin in ORIGINS}
    dimensions = sorted({(int(f["width"]), int(f["height"])) for f in files})
    formats = sorted({str(f["format"]) for f in files})
    content_types = _few_sorted({h.get("content-type") for h in headers}, limit=None)
    if len(dimensions) > 1:
        failures.append(f"dimensions differ: {[list(d) for d in dimensions][:10]}")
    if len(formats) > 1:
        failures.append(f"formats differ: {formats}")
    if len(content_types) > 1:
        failures.append(f"content types differ: {content_types}")
    if differing:
        failures.append(f"headers differ by origin: {', '.join(sorted(differing))}")
    n_real = origins.count("real")
    smallest_p = smallest_reachable_p(n_real, len(origins) - n_real, n_permutations)
    return {
        "n_files": {origin: origins.count(origin) for origin in ORIGINS},
        "alpha": alpha,
        "n_permutations": n_permutations,
        # Whether a signal that separates the origins perfectly would reach p < alpha at all:
        # with 2 real files among 12, no arrangement can (2 of the 66 are perfect), so a
        # clean result says nothing and the gate reports the audit as unable to detect a leak.
        "smallest_p": smallest_p,
        "can_detect": smallest_p is not None and smallest_p < alpha,
        "real_needed": real_files_needed(len(origins) - n_real, alpha, n_permutations),
        "size_auc": results["bytes"],
        "signals": results,
        "encoding_failures": failures,
        "dimensions": [list(d) for d in dimensions],
        "identical_dimensions": len(dimensions) == 1,
        "formats": formats,
        "identical_format": len(formats) == 1,
        "content_types": content_types,
        "identical_content_type": len(content_types) == 1 and content_types[0] is not None,
        "headers_differing_by_origin": differing,
    }


def smallest_reachable_p(n_real: int, n_synthetic: int, n_permutations: int) -> float | None:
    """The expected permutation p-value of a perfect separation (folded AUC 1): of the
    C(n, n_real) ways to place the real files, two (all lowest, all highest) are that extreme,
    so about n_permutations * 2 / C(n, n_real) shuffles tie with it. None without both origins."""
    if n_real < 1 or n_synthetic < 1:
        return None
    extreme = min(1.0, 2 / math.comb(n_real + n_synthetic, n_real))
    return (1 + n_permutations * extreme) / (1 + n_permutations)


def real_files_needed(n_synthetic: int, alpha: float, n_permutations: int) -> int | None:
    """The fewest real files beside ``n_synthetic`` synthetic ones with which a perfect
    separation reaches p < alpha (None: no count does, e.g. too few permutations)."""
    for n_real in range(1, max(n_synthetic, 1) + 64):
        p = smallest_reachable_p(n_real, max(n_synthetic, 1), n_permutations)
        if p is not None and p < alpha:
            return n_real
    return None


def _few_sorted(values: set[str | None], limit: int | None = 10) -> list[str | None]:
    ordered = sorted(values, key=lambda v: (v is not None, v or ""))
    return ordered if limit is None else ordered[:limit]


def _signal_table(files: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Each numeric signal every file carries: bytes and payload_bytes, then ``signals``."""
    names = [key for key in _FILE_SIGNALS if all(f.get(key) is not None for f in files)]
    carried = set.intersection(*(set(f.get("signals", {})) for f in files))
    known = [n for n in (*ENCODING_SIGNALS, *CONTENT_SIGNALS) if n in carried]
    names += known + sorted(carried - set(known) - set(names))
    table: dict[str, list[float]] = {}
    for name in names:
        column = []
        for index, file in enumerate(files):
            value = file[name] if name in _FILE_SIGNALS else file["signals"][name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"file {index}: {name} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"file {index}: {name} must be finite")
            column.append(float(value))
        table[name] = column
    return table


def _check_files(files: Sequence[Mapping[str, Any]]) -> None:
    if not files:
        raise ValueError("no files to audit")
    for index, file in enumerate(files):
        missing = [key for key in _FILE_KEYS if key not in file]
        if missing:
            raise ValueError(f"file {index} is missing {', '.join(missing)}")
        if file["origin"] not in ORIGINS:
            raise ValueError(
                f"file {index}: origin must be one of {ORIGINS}, got {file['origin']!r}"
            )
        if not is_int(file["bytes"]) or file["bytes"] < 0:
            raise ValueError(f"file {index}: bytes must be an integer >= 0")
        for key in ("width", "height"):
            if not is_int(file[key]) or file[key] < 1:
                raise ValueError(f"file {index}: {key} must be an integer >= 1")
        if not isinstance(file["format"], str):
            raise ValueError(f"file {index}: format must be a string")
        if not isinstance(file["headers"], Mapping):
            raise ValueError(f"file {index}: headers must be a mapping")
        if not isinstance(file.get("signals", {}), Mapping):
            raise ValueError(f"file {index}: signals must be a mapping")
