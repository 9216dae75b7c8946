from collections import Counter
from pathlib import Path

import pytest

from fairskin.datasets import parse_metadata, summarize
from fairskin.labels import Diagnosis, FstRange

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture(scope="module")
def ddi():
    data = (FIXTURES / "ddi_metadata.csv").read_bytes()
    return parse_metadata("ddi", data, file_name="ddi_metadata.csv")


def test_all_653_rows_parse_with_unique_ids(ddi):
    assert ddi.variant == "ddi"
    assert len(ddi.records) == 653
    assert ddi.excluded == []
    ids = {r.source_id for r in ddi.records}
    assert len(ids) == 653
    # This copy lacks the official release's IDs 8, 54 and 55.
    assert {"8", "54", "55"} & ids == set()


def test_skin_tone_groups_become_fst_ranges(ddi):
    assert Counter(r.fst for r in ddi.records) == {
        FstRange(1, 2): 208,
        FstRange(3, 4): 241,
        FstRange(5, 6): 204,
    }
    assert all(r.fst_source == "dataset" for r in ddi.records)
    assert {r.extra["skin_tone"] for r in ddi.records} == {12, 34, 56}


def test_malignant_is_kept_as_a_bool(ddi):
    assert Counter(r.extra["malignant"] for r in ddi.records) == {True: 170, False: 483}
    assert all(type(r.extra["malignant"]) is bool for r in ddi.records)


def test_first_record(ddi):
    first = ddi.records[0]
    assert (first.source_id, first.file_name) == ("1", "000001.png")
    assert first.diagnosis is Diagnosis.MEL
    assert first.source_label == first.extra["disease"] == "melanoma-in-situ"
    assert first.fst == FstRange(5, 6)
    assert first.fst_second is None and first.group_id is None


def test_mapping_leaves_unmapped_diseases_as_other_with_their_label(ddi):
    counts = Counter(r.diagnosis.value for r in ddi.records)
    assert counts == {
        "MEL": 20,
        "NV": 143,
        "BCC": 49,
        "AK": 4,
        "BKL": 80,
        "DF": 22,
        "VASC": 29,
        "OTHER": 306,
    }
    scc = [r for r in ddi.records if r.source_label == "squamous-cell-carcinoma"]
    assert len(scc) == 17 and all(r.diagnosis is Diagnosis.OTHER for r in scc)


def test_summary_shows_ranges_not_single_types(ddi):
    table = summarize(ddi.records)
    assert list(table["MEL"]) == ["I–II", "III–IV", "V–VI", "?"]
    assert table["BCC"] == {"I–II": 14, "III–IV": 35, "V–VI": 0, "?": 0}
