import csv
from pathlib import Path

import pytest

from fairskin.datasets import load_mapping
from fairskin.datasets.mapping import normalise_label
from fairskin.labels import Diagnosis

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def _shared_rows(name: str) -> list[dict[str, str]]:
    with open(FIXTURES / name, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_fitzpatrick17k_strict_tier_is_the_proposals_strict_rows():
    expected = {
        row["fitz17k_label"]: Diagnosis(row["ham_class"])
        for row in _shared_rows("fitz17k_to_ham7_mapping.csv")
        if row["mapping_tier"] == "strict"
    }
    assert load_mapping("fitzpatrick17k", "strict") == expected
    assert len(expected) == 15


def test_fitzpatrick17k_broad_tier_adds_optional_broad_rows_to_strict():
    expected = {
        row["fitz17k_label"]: Diagnosis(row["ham_class"])
        for row in _shared_rows("fitz17k_to_ham7_mapping.csv")
    }
    broad = load_mapping("fitzpatrick17k", "broad")
    assert broad == expected
    assert broad["squamous cell carcinoma"] is Diagnosis.AK
    assert "squamous cell carcinoma" not in load_mapping("fitzpatrick17k", "strict")


def test_every_fitzpatrick17k_mapping_label_exists_in_the_dataset_vocabulary():
    vocabulary = {row["label"] for row in _shared_rows("fitzpatrick17k_label_vocabulary.csv")}
    assert set(load_mapping("fitzpatrick17k", "broad")) <= vocabulary


def test_ddi_mapping_matches_the_proposal_and_has_one_tier():
    expected = {
        row["ddi_disease"]: Diagnosis(row["ham_class"])
        for row in _shared_rows("ddi_to_ham7_mapping.csv")
    }
    assert load_mapping("ddi", "strict") == expected
    assert load_mapping("ddi", "broad") == expected


def test_every_ddi_mapping_label_occurs_in_the_ddi_metadata():
    diseases = {row["disease"] for row in _shared_rows("ddi_metadata.csv")}
    assert set(load_mapping("ddi", "strict")) <= diseases


def test_ham10000_codes_map_akiec_to_ak():
    codes = load_mapping("ham10000", "strict")
    assert codes == {
        "nv": Diagnosis.NV,
        "mel": Diagnosis.MEL,
        "bkl": Diagnosis.BKL,
        "bcc": Diagnosis.BCC,
        "akiec": Diagnosis.AK,
        "vasc": Diagnosis.VASC,
        "df": Diagnosis.DF,
    }


def test_mappings_never_produce_other():
    for dataset in ("fitzpatrick17k", "ddi", "ham10000"):
        assert Diagnosis.OTHER not in load_mapping(dataset, "broad").values()


@pytest.mark.parametrize(
    ("dataset", "tier"), [("isic", "strict"), ("csv", "strict"), ("ddi", "optional_broad")]
)
def test_unknown_dataset_or_tier_is_refused(dataset, tier):
    with pytest.raises(ValueError, match="mapping|tier"):
        load_mapping(dataset, tier)


def test_label_normalisation_ignores_case_and_whitespace_runs():
    assert normalise_label("  Basal  Cell\tCarcinoma ") == "basal cell carcinoma"
