"""Generic CSV for image folders that come from no known dataset.

Layout (UTF-8, comma-separated, one header row; column names are lower case):

- `file` (required): the image's bare file name, e.g. `lesion_001.jpg`. Images are matched by
  base name, so directories, absolute paths, `..`, backslashes and drive letters are refused.
  The file name is also the record's source id and must be unique.
- `diagnosis` (required): one of MEL, NV, BCC, AK, BKL, DF, VASC or OTHER, case-insensitive.
  Free-text labels are refused rather than guessed; map them to a code before importing.
- `fst` (optional): the Fitzpatrick skin type as an integer 1-6, or empty when unknown.
- `group_id` (optional): a lesion or patient id; images sharing one are kept in the same split.
- any other column: kept as text in the record's `extra`, keyed by column name.

Example::

    file,diagnosis,fst,group_id,site
    lesion_001.jpg,MEL,5,patient-7,back
    lesion_002.jpg,other,,,
"""

from __future__ import annotations

from collections.abc import Iterator

from fairskin.datasets.fields import detect_layout, exact_fst, fst_type, or_none, safe_file_name
from fairskin.datasets.records import ExcludedRow, ImageRecord
from fairskin.datasets.table import Row, Table
from fairskin.labels import Diagnosis

VARIANT = "generic"
LAYOUTS = {VARIANT: ("file", "diagnosis")}
_KNOWN_COLUMNS = ("file", "diagnosis", "fst", "group_id")
_CODES = {d.value.casefold(): d for d in Diagnosis}


def parse(table: Table, *, tier: str) -> tuple[str, Iterator[ImageRecord | ExcludedRow]]:
    del tier  # labels are already FairSkin codes; there is nothing to map
    variant = detect_layout(table, LAYOUTS, "generic CSV")
    for position, name in enumerate(table.header, start=1):
        if not name:
            raise table.header_error(f"column {position} has no name")
    extra_columns = [name for name in table.header if name not in _KNOWN_COLUMNS]
    return variant, (_record(row, extra_columns) for row in table.rows)


def _record(row: Row, extra_columns: list[str]) -> ImageRecord:
    file_name = safe_file_name(row, "file", row["file"])
    label = row["diagnosis"]
    diagnosis = _CODES.get(label.casefold())
    if diagnosis is None:
        accepted = ", ".join(d.value for d in Diagnosis)
        raise row.error(f"diagnosis must be one of {accepted} (any case), got {label!r}")
    fst = fst_type(row, "fst", unknown="") if "fst" in row.cells else None
    return ImageRecord(
        source_id=file_name,
        file_name=file_name,
        diagnosis=diagnosis,
        source_label=label,
        fst=exact_fst(fst),
        fst_source="dataset" if fst is not None else None,
        fst_second=None,
        group_id=or_none(row.cells.get("group_id", "")),
        extra={name: row[name] for name in extra_columns},
        row_number=row.row_number,
    )
