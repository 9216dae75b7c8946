"""Entry point the importer calls: one metadata file in, validated records out."""

from __future__ import annotations

from fairskin.datasets import ddi, fitzpatrick17k, generic, ham10000
from fairskin.datasets.errors import MetadataError
from fairskin.datasets.mapping import check_tier
from fairskin.datasets.records import ExcludedRow, ImageRecord, ParseResult
from fairskin.datasets.table import MetadataSource, read_table

_PARSERS = {
    "fitzpatrick17k": fitzpatrick17k.parse,
    "ddi": ddi.parse,
    "ham10000": ham10000.parse,
    "csv": generic.parse,
}
FORMATS: tuple[str, ...] = tuple(_PARSERS)


def parse_metadata(
    fmt: str,
    data: MetadataSource,
    *,
    mapping: str = "strict",
    file_name: str,
) -> ParseResult:
    """Parse a whole metadata file, raising MetadataError at the first bad row.

    Nothing is returned until every row has been checked, so a caller that writes only a
    returned result never stores part of a bad file. `data` is the file's bytes or an open
    binary or text stream; `file_name` is used only in error messages.
    """
    if fmt not in _PARSERS:
        raise ValueError(f"unknown metadata format {fmt!r}; expected one of {FORMATS}")
    check_tier(mapping)
    table = read_table(data, file_name=file_name)
    variant, items = _PARSERS[fmt](table, tier=mapping)
    records: list[ImageRecord] = []
    excluded: list[ExcludedRow] = []
    id_rows: dict[str, int] = {}
    file_rows: dict[str, int] = {}
    for item in items:
        # Excluded rows still claim their id: a repeated id means a broken file either way.
        _claim(id_rows, item.source_id, item.row_number, "source id", file_name)
        if isinstance(item, ExcludedRow):
            excluded.append(item)
            continue
        _claim(file_rows, item.file_name, item.row_number, "image file name", file_name)
        records.append(item)
    return ParseResult(dataset=fmt, variant=variant, records=records, excluded=excluded)


def _claim(seen: dict[str, int], key: str, row_number: int, what: str, file_name: str) -> None:
    first_row = seen.setdefault(key, row_number)
    if first_row != row_number:
        raise MetadataError(
            f"duplicate {what} {key!r}: data rows {first_row} and {row_number}",
            file_name=file_name,
            row_number=row_number,
        )
