"""Strict CSV reading shared by all metadata parsers.

Rows whose field count differs from the header's are errors, never padded or truncated: a
shifted column would silently put an FST in the label field. Completely blank lines are
skipped (editors leave them at the end of files) and do not count as data rows.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from fairskin.datasets.errors import MetadataError

if TYPE_CHECKING:
    from _csv import Reader

MetadataSource = bytes | bytearray | IO[bytes] | IO[str]


@dataclass(frozen=True)
class Row:
    """One data row, cells keyed by column name with surrounding whitespace removed."""

    file_name: str
    row_number: int
    line_number: int
    cells: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.cells[column]

    def error(self, detail: str) -> MetadataError:
        return MetadataError(
            detail,
            file_name=self.file_name,
            row_number=self.row_number,
            line_number=self.line_number,
        )


@dataclass(frozen=True)
class Table:
    """A header and a lazy row iterator, so parsers stop at the first bad row."""

    file_name: str
    header: tuple[str, ...]
    rows: Iterator[Row]

    def header_error(self, detail: str) -> MetadataError:
        return MetadataError(f"header: {detail}", file_name=self.file_name)


# Column names are echoed in an error only this far: enough to recognise the file, never a
# page of hostile text.
SHOWN_NAMES, SHOWN_WIDTH = 12, 40


def shown_names(names: Sequence[str]) -> str:
    """The first SHOWN_NAMES names, each cut to SHOWN_WIDTH characters, and a count of the rest."""
    shown = [repr(name[:SHOWN_WIDTH]) for name in names[:SHOWN_NAMES]]
    if len(names) > SHOWN_NAMES:
        shown.append(f"… {len(names) - SHOWN_NAMES} more")
    return ", ".join(shown)


def read_table(data: MetadataSource, *, file_name: str) -> Table:
    text = _decode(data, file_name=file_name)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header_row = next((row for row in reader if row), None)
    except csv.Error as exc:
        raise MetadataError(f"header is not valid CSV: {exc}", file_name=file_name) from exc
    if header_row is None:
        raise MetadataError("file is empty", file_name=file_name)
    header = tuple(name.strip() for name in header_row)
    if any("\x00" in name for name in header):
        raise MetadataError("header: a column name contains a NUL byte (0x00)", file_name=file_name)
    # Counted once: header.count() per column made a 100,000-column header take minutes.
    repeated = sorted(name for name, n in Counter(header).items() if n > 1)
    if repeated:
        raise MetadataError(
            f"header: column names repeated: {shown_names(repeated)}", file_name=file_name
        )
    return Table(file_name=file_name, header=header, rows=_rows(reader, header, file_name))


def _rows(reader: Reader, header: tuple[str, ...], file_name: str) -> Iterator[Row]:
    row_number = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise MetadataError(
                f"not valid CSV: {exc}",
                file_name=file_name,
                row_number=row_number + 1,
                line_number=reader.line_num,
            ) from exc
        if not fields:
            continue
        row_number += 1
        if len(fields) != len(header):
            raise MetadataError(
                f"has {len(fields)} fields but the header has {len(header)}",
                file_name=file_name,
                row_number=row_number,
                line_number=reader.line_num,
            )
        cells = {name: value.strip() for name, value in zip(header, fields, strict=True)}
        # No database text column can hold a NUL byte: refused here, with its row and column.
        for name, value in cells.items():
            if "\x00" in value:
                raise MetadataError(
                    f"column {shown_names([name])} contains a NUL byte (0x00)",
                    file_name=file_name,
                    row_number=row_number,
                    line_number=reader.line_num,
                )
        yield Row(file_name, row_number, reader.line_num, cells)
    if row_number == 0:
        raise MetadataError("file has a header but no data rows", file_name=file_name)


def _decode(data: MetadataSource, *, file_name: str) -> str:
    if isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        try:
            content = data.read()
        except UnicodeDecodeError as exc:
            raise MetadataError(f"not UTF-8 text: {exc.reason}", file_name=file_name) from exc
        if isinstance(content, str):
            return content.removeprefix("\ufeff")
        raw = content
    try:
        # utf-8-sig because spreadsheet programs prepend a BOM that would corrupt column 1.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row_number, line_number = _locate_byte(raw, exc.start)
        raise MetadataError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
            "save the file as UTF-8",
            file_name=file_name,
            row_number=row_number,
            line_number=line_number,
        ) from exc


def _locate_byte(raw: bytes, offset: int) -> tuple[int | None, int]:
    """Data row and line of a byte offset; the row is None when the offset is in the header."""
    line_number = raw.count(b"\n", 0, offset) + 1
    prefix = raw[:offset].decode("utf-8-sig")
    # Counting CSV records, not newlines, keeps the row right when quoted fields span lines.
    try:
        records = sum(1 for row in csv.reader(io.StringIO(prefix, newline="")) if row)
    except csv.Error:
        return None, line_number
    ends_row = prefix == "" or prefix.endswith(("\n", "\r"))
    record_index = records + 1 if ends_row else records
    return (record_index - 1 or None), line_number
