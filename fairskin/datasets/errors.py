"""The one exception every metadata parser raises for bad input."""

from __future__ import annotations


class MetadataError(ValueError):
    """A metadata file that cannot be imported as it is.

    `row_number` is the 1-based data row (the header is not counted) or None when the problem
    is the header or the file as a whole; `line_number` is the physical line, because that is
    what an editor shows and quoted fields may span lines.
    """

    def __init__(
        self,
        detail: str,
        *,
        file_name: str,
        row_number: int | None = None,
        line_number: int | None = None,
    ) -> None:
        self.detail = detail
        self.file_name = file_name
        self.row_number = row_number
        self.line_number = line_number
        super().__init__(self._message())

    def _message(self) -> str:
        if self.row_number is not None:
            where = f"data row {self.row_number}"
            if self.line_number is not None:
                where += f" (line {self.line_number})"
            return f"{self.file_name}, {where}: {self.detail}"
        if self.line_number is not None:
            return f"{self.file_name}, line {self.line_number}: {self.detail}"
        return f"{self.file_name}: {self.detail}"
