"""Cell validators shared by the dataset parsers; each raises the row's MetadataError."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from fairskin.datasets.paths import unsafe_path_problem
from fairskin.datasets.table import Row, Table, shown_names
from fairskin.labels import FstRange

_INTEGER = re.compile(r"[+-]?\d+")


def detect_layout(table: Table, layouts: Mapping[str, tuple[str, ...]], dataset: str) -> str:
    """Name of the first layout whose columns are all in the header.

    Extra columns are ignored; a header that fits no layout is reported with the columns each
    layout is missing, so the user can tell a wrong format choice from a renamed column.
    """
    present = set(table.header)
    missing_by_layout: list[str] = []
    for name, required in layouts.items():
        missing = [column for column in required if column not in present]
        if not missing:
            return name
        shown = ", ".join(repr(column) if column else "(unnamed index)" for column in missing)
        missing_by_layout.append(f"{name} layout is missing {shown}")
    raise table.header_error(
        f"not a {dataset} metadata file: {'; '.join(missing_by_layout)} "
        f"(found {shown_names(table.header)})"
    )


def required(row: Row, column: str) -> str:
    value = row[column]
    if not value:
        raise row.error(f"{column} is empty")
    return value


def fst_type(row: Row, column: str, *, unknown: str | None) -> int | None:
    """An integer Fitzpatrick type 1-6; the `unknown` marker (e.g. '-1' or '') means None."""
    value = row[column]
    if unknown is not None and value == unknown:
        return None
    allowed = "an integer 1-6" + (f" or {unknown!r} for unknown" if unknown is not None else "")
    if not _INTEGER.fullmatch(value) or not 1 <= int(value) <= 6:
        raise row.error(f"{column} must be {allowed}, got {value!r}")
    return int(value)


def exact_fst(value: int | None) -> FstRange | None:
    return None if value is None else FstRange(value, value)


def optional_float(row: Row, column: str, *, low: float, high: float) -> float | None:
    value = row[column]
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise row.error(f"{column} must be a number {low:g}-{high:g} or empty, got {value!r}")
    return number


def or_none(value: str) -> str | None:
    return value or None


def safe_file_name(row: Row, column: str, value: str) -> str:
    """Reject names that could point outside the image folder or archive.

    Images are matched by base name, so a legitimate name never needs a directory part.
    """
    if not value:
        raise row.error(f"{column} is empty")
    problem = unsafe_path_problem(value)
    if problem is None and "/" in value:
        problem = "contains a directory; give the bare file name (images are matched by name)"
    elif problem is None and value == ".":
        problem = "is not a file name"
    if problem:
        raise row.error(f"unsafe file name in {column} {value!r}: {problem}")
    return value
