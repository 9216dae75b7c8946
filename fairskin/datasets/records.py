"""What a metadata parser hands to the importer: plain values, no database objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from fairskin.labels import Diagnosis, FstRange

JsonScalar = str | int | float | bool | None
FstSource = Literal["dataset"]


@dataclass(frozen=True)
class ImageRecord:
    """One image row of a metadata file, mapped to FairSkin's labels.

    `source_label` keeps the dataset's own label so a later change of mapping tier can be
    re-applied without the original file. `extra` holds dataset-specific metadata and is
    JSON-serialisable as it stands.
    """

    source_id: str
    file_name: str
    diagnosis: Diagnosis
    source_label: str
    fst: FstRange | None
    fst_source: FstSource | None
    fst_second: int | None
    group_id: str | None
    # Excluded from hashing because dicts are unhashable; still compared for equality.
    extra: dict[str, JsonScalar] = field(default_factory=dict, hash=False)
    row_number: int = 0


class ExcludedRow(NamedTuple):
    """A valid row left out on purpose (e.g. flagged as wrongly labelled by the dataset)."""

    row_number: int
    source_id: str
    reason: str


@dataclass(frozen=True)
class ParseResult:
    dataset: str
    variant: str
    records: list[ImageRecord]
    excluded: list[ExcludedRow]
