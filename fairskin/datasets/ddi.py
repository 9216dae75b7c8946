"""Diverse Dermatology Images metadata (Daneshjou et al. 2022).

DDI gives skin-tone groups, not single types: 12 = FST I-II, 34 = III-IV, 56 = V-VI, kept as
ranges rather than guessed down to one type. The leading unnamed index column is optional.
"""

from __future__ import annotations

from collections.abc import Iterator

from fairskin.datasets.fields import detect_layout, required, safe_file_name
from fairskin.datasets.mapping import load_mapping, normalise_label
from fairskin.datasets.records import ExcludedRow, ImageRecord
from fairskin.datasets.table import Row, Table
from fairskin.labels import Diagnosis, FstRange

VARIANT = "ddi"
LAYOUTS = {VARIANT: ("DDI_ID", "DDI_file", "skin_tone", "malignant", "disease")}
SKIN_TONES = {"12": FstRange(1, 2), "34": FstRange(3, 4), "56": FstRange(5, 6)}
_MALIGNANT = {"true": True, "false": False}


def parse(table: Table, *, tier: str) -> tuple[str, Iterator[ImageRecord | ExcludedRow]]:
    variant = detect_layout(table, LAYOUTS, "DDI")
    mapping = load_mapping("ddi", tier)
    return variant, (_record(row, mapping) for row in table.rows)


def _record(row: Row, mapping: dict[str, Diagnosis]) -> ImageRecord:
    ddi_id = required(row, "DDI_ID")
    if not ddi_id.isdigit():
        raise row.error(f"DDI_ID must be a positive integer, got {ddi_id!r}")
    file_name = safe_file_name(row, "DDI_file", row["DDI_file"])
    skin_tone = row["skin_tone"]
    if skin_tone not in SKIN_TONES:
        raise row.error(f"skin_tone must be one of 12, 34, 56, got {skin_tone!r}")
    malignant = _MALIGNANT.get(row["malignant"].casefold())
    if malignant is None:
        raise row.error(f"malignant must be TRUE or FALSE, got {row['malignant']!r}")
    disease = required(row, "disease")
    return ImageRecord(
        source_id=ddi_id,
        file_name=file_name,
        diagnosis=mapping.get(normalise_label(disease), Diagnosis.OTHER),
        source_label=disease,
        fst=SKIN_TONES[skin_tone],
        fst_source="dataset",
        fst_second=None,
        group_id=None,
        extra={"malignant": malignant, "disease": disease, "skin_tone": int(skin_tone)},
        row_number=row.row_number,
    )
