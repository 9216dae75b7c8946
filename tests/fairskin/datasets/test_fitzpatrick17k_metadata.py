import csv
import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from fairskin.datasets import ExcludedRow, parse_metadata, summarize
from fairskin.labels import Diagnosis, FstRange

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture(scope="module")
def current_bytes() -> bytes:
    return (FIXTURES / "fitzpatrick17k.csv").read_bytes()


@pytest.fixture(scope="module")
def strict(current_bytes):
    return parse_metadata("fitzpatrick17k", current_bytes, file_name="fitzpatrick17k.csv")


def _fst_column(record) -> str:
    return "?" if record.fst is None else str(record.fst)


def test_fst_counts_after_excluding_wrongly_labelled_rows(strict):
    assert strict.variant == "fitzpatrick17k-current"
    assert len(strict.records) == 16_560
    assert Counter(_fst_column(r) for r in strict.records) == {
        "?": 565,
        "I": 2944,
        "II": 4804,
        "III": 3306,
        "IV": 2780,
        "V": 1529,
        "VI": 632,
    }


def test_the_17_wrongly_labelled_rows_are_excluded_and_named(strict, current_bytes):
    raw_rows = list(csv.DictReader(io.StringIO(current_bytes.decode())))
    wrongly = [
        (number, row["md5hash"])
        for number, row in enumerate(raw_rows, start=1)
        if row["qc"] == "3 Wrongly labelled"
    ]
    assert len(strict.excluded) == 17
    assert [(e.row_number, e.source_id) for e in strict.excluded] == wrongly
    assert all("Wrongly labelled" in e.reason for e in strict.excluded)
    assert not {e.source_id for e in strict.excluded} & {r.source_id for r in strict.records}


def test_strict_mapping_class_counts(strict):
    counts = Counter(r.diagnosis for r in strict.records)
    assert {d.value: counts[d] for d in Diagnosis if d is not Diagnosis.OTHER} == {
        "MEL": 573,
        "NV": 235,
        "BCC": 596,
        "AK": 175,
        "BKL": 68,
        "DF": 79,
        "VASC": 188,
    }
    assert len(strict.records) - counts[Diagnosis.OTHER] == 1914


def test_strict_diagnosis_by_fst_table(strict):
    table = summarize(strict.records)
    columns = ["I", "II", "III", "IV", "V", "VI", "?"]
    expected = {
        "MEL": [133, 198, 108, 60, 32, 15, 27],
        "NV": [68, 60, 48, 33, 17, 6, 3],
        "BCC": [132, 215, 125, 78, 26, 7, 13],
        "AK": [33, 72, 30, 21, 11, 1, 7],
        "BKL": [15, 31, 8, 5, 5, 3, 1],
        "DF": [16, 30, 24, 7, 1, 0, 1],
        "VASC": [53, 66, 37, 17, 10, 1, 4],
    }
    for diagnosis, counts in expected.items():
        assert table[diagnosis] == dict(zip(columns, counts, strict=True)), diagnosis
    assert sum(table["OTHER"].values()) == 16_560 - 1914


def test_broad_tier_maps_2840_images(current_bytes):
    broad = parse_metadata(
        "fitzpatrick17k", current_bytes, mapping="broad", file_name="fitzpatrick17k.csv"
    )
    mapped = [r for r in broad.records if r.diagnosis is not Diagnosis.OTHER]
    assert len(mapped) == 2840
    scc = [r for r in broad.records if r.source_label == "squamous cell carcinoma"]
    assert scc and all(r.diagnosis is Diagnosis.AK for r in scc)


def test_record_fields_of_a_real_row(strict):
    first = strict.records[0]
    assert first.source_id == "5e82a45bc5d78bd24ae9202d194423f8"
    assert first.file_name == "5e82a45bc5d78bd24ae9202d194423f8.jpg"
    assert first.source_label == "drug induced pigmentary changes"
    assert first.diagnosis is Diagnosis.OTHER
    assert first.fst == FstRange(3, 3)
    assert first.fst_source == "dataset"
    assert first.fst_second == 3
    assert first.group_id is None
    assert first.row_number == 1
    assert first.extra["nine_partition_label"] == "inflammatory"
    assert first.extra["three_partition_label"] == "non-neoplastic"
    assert first.extra["qc"] is None
    assert first.extra["url"].startswith("https://www.dermaamin.com/")


def test_unknown_fst_and_unknown_second_label_become_none(strict):
    unknown = [r for r in strict.records if r.fst is None]
    assert unknown and all(r.fst_source is None for r in unknown)
    assert Counter(r.fst_second is None for r in strict.records)[True] > 0
    assert all(r.fst_second in {None, 1, 2, 3, 4, 5, 6} for r in strict.records)


def test_kept_qc_codes_stay_in_extra(strict):
    qc = Counter(r.extra["qc"] for r in strict.records)
    assert qc["1 Diagnostic"] == 348
    assert "3 Wrongly labelled" not in qc


def test_older_release_sample_parses_to_the_same_records(strict):
    older = parse_metadata(
        "fitzpatrick17k",
        (FIXTURES / "fitzpatrick17k_older_release_sample.csv").read_bytes(),
        file_name="fitzpatrick17k_older.csv",
    )
    assert older.variant == "fitzpatrick17k-older"
    by_id = {r.source_id: r for r in strict.records}
    assert len(older.records) > 40
    assert any(r.fst is None for r in older.records)
    for record in older.records:
        # The older release has no second FST label.
        current = replace(by_id[record.source_id], fst_second=None, row_number=record.row_number)
        assert record == current
    excluded_ids = {e.source_id for e in strict.excluded}
    assert {e.source_id for e in older.excluded} == excluded_ids


def test_whole_file_rewritten_in_the_older_layout_gives_the_same_records(strict, current_bytes):
    reader = csv.DictReader(io.StringIO(current_bytes.decode()))
    out = io.StringIO()
    columns = [
        "",
        "md5hash",
        "fitzpatrick",
        "label",
        "nine_partition_label",
        "three_partition_label",
        "qc",
        "url",
        "url_alphanum",
    ]
    writer = csv.writer(out)
    writer.writerow(columns)
    for index, row in enumerate(reader):
        row[""] = str(index)
        row["fitzpatrick"] = row["fitzpatrick_scale"]
        writer.writerow([row[c] for c in columns])
    older = parse_metadata("fitzpatrick17k", io.StringIO(out.getvalue()), file_name="old.csv")
    assert older.records == [replace(r, fst_second=None) for r in strict.records]
    assert older.excluded == strict.excluded


def test_excluded_rows_are_named_tuples_of_row_id_reason(strict):
    first = strict.excluded[0]
    assert isinstance(first, ExcludedRow)
    row_number, source_id, reason = first
    assert (row_number, source_id) == (first.row_number, first.source_id)
    assert reason == "qc '3 Wrongly labelled'"
