"""Diagnosis x skin-type counts, the table an engineer checks after an import."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fairskin.datasets.records import ImageRecord
from fairskin.labels import FST_TYPES, Diagnosis, FstRange

UNKNOWN_FST = "?"


def summarize(records: Iterable[ImageRecord]) -> dict[str, dict[str, int]]:
    """{diagnosis: {fst column: count}} for every diagnosis that occurs.

    Columns are I-VI and "?" (unknown), so empty dark-skin cells show as 0 instead of
    disappearing, plus any range such as "I–II" that occurs, ordered by skin type. When every
    known skin type is a range (DDI), the single-type columns would only hold zeros and are
    left out.
    """
    cells: Counter[tuple[Diagnosis, FstRange | None]] = Counter(
        (record.diagnosis, record.fst) for record in records
    )
    known = {fst for _, fst in cells if fst is not None}
    if not known or any(fst.is_exact for fst in known):
        known |= {FstRange(t, t) for t in FST_TYPES}
    columns: list[FstRange | None] = [*sorted(known, key=lambda f: (f.low, f.high)), None]
    present = {diagnosis for diagnosis, _ in cells}
    return {
        diagnosis.value: {
            UNKNOWN_FST if fst is None else str(fst): cells[(diagnosis, fst)] for fst in columns
        }
        for diagnosis in Diagnosis
        if diagnosis in present
    }
