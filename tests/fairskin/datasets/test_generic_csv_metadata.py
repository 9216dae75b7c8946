import pytest

from fairskin.datasets import MetadataError, parse_metadata
from fairskin.labels import Diagnosis, FstRange


def _parse(text: str):
    return parse_metadata("csv", text.encode(), file_name="images.csv")


def test_documented_example_parses():
    result = _parse(
        "file,diagnosis,fst,group_id,site\n"
        "lesion_001.jpg,MEL,5,patient-7,back\n"
        "lesion_002.jpg,other,,,\n"
    )
    assert result.variant == "generic"
    first, second = result.records
    assert (first.source_id, first.file_name) == ("lesion_001.jpg", "lesion_001.jpg")
    assert first.diagnosis is Diagnosis.MEL and first.source_label == "MEL"
    assert first.fst == FstRange(5, 5) and first.fst_source == "dataset"
    assert first.group_id == "patient-7"
    assert first.extra == {"site": "back"}
    assert second.diagnosis is Diagnosis.OTHER and second.source_label == "other"
    assert second.fst is None and second.fst_source is None
    assert second.group_id is None
    assert second.extra == {"site": ""}


def test_only_file_and_diagnosis_are_required_and_codes_ignore_case():
    result = _parse("diagnosis,file\nbcc,a.png\nVasc,b.png\nAk,c.png\n")
    assert [r.diagnosis for r in result.records] == [Diagnosis.BCC, Diagnosis.VASC, Diagnosis.AK]
    assert all(r.fst is None and r.group_id is None and r.extra == {} for r in result.records)


def test_missing_required_column_is_named():
    with pytest.raises(MetadataError, match="'diagnosis'") as caught:
        _parse("file,label\na.jpg,MEL\n")
    assert caught.value.row_number is None
    assert "images.csv" in str(caught.value)


def test_free_text_diagnosis_is_refused_with_the_accepted_codes():
    with pytest.raises(MetadataError, match="MEL, NV, BCC, AK, BKL, DF, VASC, OTHER") as caught:
        _parse("file,diagnosis\na.jpg,MEL\nb.jpg,melanoma\n")
    assert caught.value.row_number == 2
    assert "'melanoma'" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/passwd", "absolute path"),
        ("../x.jpg", "'..'"),
        ("..", "'..'"),
        ("..\\..\\x.jpg", "backslash"),
        ("imgs\\x.jpg", "backslash"),
        ("C:\\x.jpg", "drive letter"),
        ("c:x.jpg", "drive letter"),
        ("sub/x.jpg", "bare file name"),
        ("a\tb.jpg", "control characters"),
    ],
)
def test_unsafe_file_names_are_refused(name, problem):
    with pytest.raises(MetadataError, match="unsafe file name") as caught:
        _parse(f'file,diagnosis\nok.jpg,NV\n"{name}",NV\n')
    assert problem in str(caught.value)
    assert caught.value.row_number == 2


def test_empty_file_name_is_refused():
    with pytest.raises(MetadataError, match="file is empty") as caught:
        _parse("file,diagnosis\n,NV\n")
    assert caught.value.row_number == 1


@pytest.mark.parametrize("fst", ["0", "7", "III", "2.0", "-1"])
def test_fst_outside_1_to_6_is_refused(fst):
    with pytest.raises(MetadataError, match=f"fst must be an integer 1-6.*'{fst}'"):
        _parse(f"file,diagnosis,fst\na.jpg,NV,{fst}\n")


def test_unnamed_column_is_refused():
    with pytest.raises(MetadataError, match="column 1 has no name"):
        _parse(",file,diagnosis\n0,a.jpg,NV\n")


def test_repeated_file_is_a_duplicate():
    with pytest.raises(MetadataError, match="duplicate source id 'a.jpg': data rows 1 and 3"):
        _parse("file,diagnosis\na.jpg,NV\nb.jpg,NV\na.jpg,MEL\n")
