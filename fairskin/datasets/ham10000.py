"""HAM10000 metadata (Tschandl et al. 2018).

There is no skin-type column (FST is estimated later from the pixels), and dx is a closed set
of seven codes, so an unknown code is an error rather than OTHER. `lesion_id` becomes the
group id because several images of one lesion must never straddle train and test.
"""

from __future__ import annotations

from collections.abc import Iterator

from fairskin.datasets.fields import (
    detect_layout,
    optional_float,
    or_none,
    required,
    safe_file_name,
)
from fairskin.datasets.mapping import load_mapping, normalise_label
from fairskin.datasets.records import ExcludedRow, ImageRecord
from fairskin.datasets.table import Row, Table
from fairskin.labels import Diagnosis

VARIANT = "ham10000"
LAYOUTS = {
    VARIANT: ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"),
}


def parse(table: Table, *, tier: str) -> tuple[str, Iterator[ImageRecord | ExcludedRow]]:
    variant = detect_layout(table, LAYOUTS, "HAM10000")
    codes = load_mapping("ham10000", tier)
    return variant, (_record(row, codes) for row in table.rows)


def _record(row: Row, codes: dict[str, Diagnosis]) -> ImageRecord:
    lesion_id = required(row, "lesion_id")
    image_id = required(row, "image_id")
    file_name = safe_file_name(row, "image_id", f"{image_id}.jpg")
    dx = row["dx"]
    diagnosis = codes.get(normalise_label(dx))
    if diagnosis is None:
        raise row.error(f"dx must be one of {', '.join(codes)}, got {dx!r}")
    return ImageRecord(
        source_id=image_id,
        file_name=file_name,
        diagnosis=diagnosis,
        source_label=dx,
        fst=None,
        fst_source=None,
        fst_second=None,
        group_id=lesion_id,
        extra={
            "dx_type": or_none(row["dx_type"]),
            "age": optional_float(row, "age", low=0, high=130),
            "sex": or_none(row["sex"]),
            "localization": or_none(row["localization"]),
        },
        row_number=row.row_number,
    )
