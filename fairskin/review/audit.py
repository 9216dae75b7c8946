"""The blinding audit: whether the served files' own properties (byte size, dimensions, format,
headers) give an image's origin away. Its real-vs-synthetic AUC is also the one the gate report
uses to measure how well ratings separate the origins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sklearn.metrics import roc_auc_score

from fairskin.review.study import ORIGINS, is_int


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

    origins = [file["origin"] for file in files]
    size_auc: dict[str, Any] = {"value": None, "why": None}
    auc = auc_real_positive(origins, [file["bytes"] for file in files])
    if auc["value"] is None:
        size_auc["why"] = "needs both real and synthetic files"
    else:
        size_auc["value"] = max(auc["value"], 1.0 - auc["value"])

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
