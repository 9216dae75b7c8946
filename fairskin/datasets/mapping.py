"""Dataset label -> FairSkin diagnosis mappings, kept as data in `mappings/<dataset>.csv`.

Each file has columns `source_label,diagnosis,tier`. The Fitzpatrick17k and DDI files are the
proposed mappings from shared/data (`optional_broad` renamed `broad`; every DDI row is strict
because that proposal has no second tier); HAM10000's file lists its seven fixed dx codes.
Under tier "strict" only strict rows apply, under "broad" strict and broad rows both apply.
Labels that no row maps become Diagnosis.OTHER in the parsers.
"""

from __future__ import annotations

import csv
import io
from importlib import resources

from fairskin.labels import SEVEN_CLASSES, Diagnosis

MAPPED_DATASETS = ("fitzpatrick17k", "ddi", "ham10000")
TIERS = ("strict", "broad")


def normalise_label(label: str) -> str:
    """Lookup key for a source label: case and runs of whitespace carry no meaning."""
    return " ".join(label.casefold().split())


def load_mapping(dataset: str, tier: str) -> dict[str, Diagnosis]:
    """Normalised source label -> diagnosis for `dataset` under `tier`."""
    if dataset not in MAPPED_DATASETS:
        raise ValueError(f"no label mapping for dataset {dataset!r}; known: {MAPPED_DATASETS}")
    check_tier(tier)
    allowed_tiers = {"strict"} if tier == "strict" else set(TIERS)
    mapping: dict[str, Diagnosis] = {}
    for label, diagnosis, row_tier in _read_mapping_rows(dataset):
        if row_tier in allowed_tiers:
            mapping[label] = diagnosis
    return mapping


def check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"mapping tier must be one of {TIERS}, got {tier!r}")


def _read_mapping_rows(dataset: str) -> list[tuple[str, Diagnosis, str]]:
    name = f"{dataset}.csv"
    text = resources.files(__package__).joinpath("mappings", name).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text), strict=True)
    rows: list[tuple[str, Diagnosis, str]] = []
    seen: set[str] = set()
    # A broken mapping file would silently mislabel thousands of images, so it fails loudly.
    for line_no, row in enumerate(reader, start=2):
        label = normalise_label(row["source_label"] or "")
        code = (row["diagnosis"] or "").strip()
        row_tier = (row["tier"] or "").strip()
        if not label or label in seen:
            raise ValueError(f"mappings/{name} line {line_no}: empty or repeated label {label!r}")
        if code not in {d.value for d in SEVEN_CLASSES}:
            raise ValueError(f"mappings/{name} line {line_no}: unknown diagnosis {code!r}")
        if row_tier not in TIERS:
            raise ValueError(f"mappings/{name} line {line_no}: unknown tier {row_tier!r}")
        seen.add(label)
        rows.append((label, Diagnosis(code), row_tier))
    return rows
