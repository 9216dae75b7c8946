"""Fitzpatrick17k metadata (Groh et al. 2021).

Two releases exist: the current one has `fitzpatrick_scale` and `fitzpatrick_centaur`; an
older one names the FST column `fitzpatrick` and starts with an unnamed pandas index column.
FST -1 means the annotators gave no type. Rows whose qc code is 3 ("Wrongly labelled") are
excluded: their diagnosis is known to be wrong, so training on them would teach the error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from fairskin.datasets.fields import detect_layout, exact_fst, fst_type, or_none, required
from fairskin.datasets.mapping import load_mapping, normalise_label
from fairskin.datasets.records import ExcludedRow, ImageRecord
from fairskin.datasets.table import Row, Table
from fairskin.labels import Diagnosis

CURRENT = "fitzpatrick17k-current"
OLDER = "fitzpatrick17k-older"

_RELEASE_COLUMNS = (
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
)
LAYOUTS = {
    CURRENT: ("md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", *_RELEASE_COLUMNS),
    OLDER: ("", "md5hash", "fitzpatrick", *_RELEASE_COLUMNS),
}
_FST_COLUMN = {CURRENT: "fitzpatrick_scale", OLDER: "fitzpatrick"}
_WRONGLY_LABELLED_QC = "3"
_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def parse(table: Table, *, tier: str) -> tuple[str, Iterator[ImageRecord | ExcludedRow]]:
    variant = detect_layout(table, LAYOUTS, "Fitzpatrick17k")
    mapping = load_mapping("fitzpatrick17k", tier)
    return variant, (_record(row, variant, mapping) for row in table.rows)


def _record(row: Row, variant: str, mapping: dict[str, Diagnosis]) -> ImageRecord | ExcludedRow:
    md5hash = required(row, "md5hash")
    # The hash becomes a file name, so anything but hex could smuggle a path in.
    if not _MD5.fullmatch(md5hash):
        raise row.error(f"md5hash must be 32 hexadecimal characters, got {md5hash!r}")
    fst = fst_type(row, _FST_COLUMN[variant], unknown="-1")
    # The older release has no second opinion; the column is used if someone added it.
    fst_second = (
        fst_type(row, "fitzpatrick_centaur", unknown="-1")
        if "fitzpatrick_centaur" in row.cells
        else None
    )
    label = required(row, "label")
    qc = row["qc"]
    if qc.split(" ", 1)[0] == _WRONGLY_LABELLED_QC:
        return ExcludedRow(row.row_number, md5hash, f"qc {qc!r}")
    return ImageRecord(
        source_id=md5hash,
        file_name=f"{md5hash}.jpg",
        diagnosis=mapping.get(normalise_label(label), Diagnosis.OTHER),
        source_label=label,
        fst=exact_fst(fst),
        fst_source="dataset" if fst is not None else None,
        fst_second=fst_second,
        group_id=None,
        extra={
            "nine_partition_label": or_none(row["nine_partition_label"]),
            "three_partition_label": or_none(row["three_partition_label"]),
            "qc": or_none(qc),
            "url": or_none(row["url"]),
            "url_alphanum": or_none(row["url_alphanum"]),
        },
        row_number=row.row_number,
    )
