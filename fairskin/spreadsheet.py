"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Spreadsheets treat a cell starting with =, +, -, @ (or a tab or carriage return before one) as
a formula, so a run name like `=HYPERLINK(...)` in an exported CSV would run when a colleague
opens the file. Text cells starting with one of those get a leading apostrophe, which the
spreadsheet hides; numbers (negative ones included) are left as they are.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: safe_cell(value) for key, value in row.items()}
