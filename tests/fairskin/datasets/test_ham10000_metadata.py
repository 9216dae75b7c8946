from collections import Counter
from pathlib import Path

import pytest

from fairskin.datasets import parse_metadata
from fairskin.labels import Diagnosis

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


@pytest.fixture(scope="module")
def ham():
    data = (FIXTURES / "HAM10000_metadata.csv").read_bytes()
    return parse_metadata("ham10000", data, file_name="HAM10000_metadata.csv")


def test_rows_and_lesions(ham):
    assert ham.variant == "ham10000"
    assert len(ham.records) == 10_015
    assert len({r.group_id for r in ham.records}) == 7470
    assert len({r.file_name for r in ham.records}) == 10_015


def test_dx_codes_map_to_the_seven_classes_with_akiec_as_ak(ham):
    assert Counter(r.diagnosis for r in ham.records) == {
        Diagnosis.NV: 6705,
        Diagnosis.MEL: 1113,
        Diagnosis.BKL: 1099,
        Diagnosis.BCC: 514,
        Diagnosis.AK: 327,
        Diagnosis.VASC: 142,
        Diagnosis.DF: 115,
    }
    assert {r.source_label for r in ham.records if r.diagnosis is Diagnosis.AK} == {"akiec"}


def test_no_skin_type_is_invented(ham):
    assert all(r.fst is None and r.fst_source is None for r in ham.records)


def test_first_record(ham):
    first = ham.records[0]
    assert first.source_id == "ISIC_0027419"
    assert first.file_name == "ISIC_0027419.jpg"
    assert first.group_id == "HAM_0000118"
    assert first.extra == {"dx_type": "histo", "age": 80.0, "sex": "male", "localization": "scalp"}


def test_missing_ages_are_none_and_present_ages_are_floats(ham):
    ages = [r.extra["age"] for r in ham.records]
    assert sum(age is None for age in ages) == 57
    assert all(isinstance(age, float) for age in ages if age is not None)


def test_crlf_line_endings_do_not_leak_into_values(ham):
    assert {r.extra["localization"] for r in ham.records if r.row_number == 10_015} == {"back"}
    assert not any(str(v).endswith("\r") for r in ham.records for v in r.extra.values())
