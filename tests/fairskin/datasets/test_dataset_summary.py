from fairskin.datasets import ImageRecord, summarize
from fairskin.labels import Diagnosis, FstRange


def _record(n: int, diagnosis: Diagnosis, fst: FstRange | None) -> ImageRecord:
    return ImageRecord(
        source_id=str(n),
        file_name=f"{n}.jpg",
        diagnosis=diagnosis,
        source_label=diagnosis.value,
        fst=fst,
        fst_source="dataset" if fst else None,
        fst_second=None,
        group_id=None,
        row_number=n,
    )


def test_counts_per_diagnosis_and_fst_with_zero_cells_kept():
    records = [
        _record(1, Diagnosis.MEL, FstRange(6, 6)),
        _record(2, Diagnosis.MEL, FstRange(6, 6)),
        _record(3, Diagnosis.MEL, None),
        _record(4, Diagnosis.DF, FstRange(1, 1)),
    ]
    table = summarize(records)
    assert list(table) == ["MEL", "DF"]
    assert table["MEL"] == {"I": 0, "II": 0, "III": 0, "IV": 0, "V": 0, "VI": 2, "?": 1}
    assert table["DF"]["I"] == 1 and table["DF"]["VI"] == 0


def test_ranges_sit_between_single_types_when_both_occur():
    records = [_record(1, Diagnosis.NV, FstRange(3, 4)), _record(2, Diagnosis.NV, FstRange(2, 2))]
    assert list(summarize(records)["NV"]) == ["I", "II", "III", "III–IV", "IV", "V", "VI", "?"]


def test_unknown_only_data_still_shows_single_type_columns():
    table = summarize([_record(1, Diagnosis.BCC, None)])
    assert table == {"BCC": {"I": 0, "II": 0, "III": 0, "IV": 0, "V": 0, "VI": 0, "?": 1}}


def test_empty_input():
    assert summarize([]) == {}
