"""The importers on the real metadata files: counts must match ../shared/data/README.md."""

from collections import Counter
from pathlib import Path

import pytest
from django.db.models import Count

from catalog.importing import dataset_import
from catalog.models import AllowedUse, Dataset, FstSource, Image

pytestmark = pytest.mark.django_db
DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", None: "?"}

# The README's strict-mapping table (qc-excluded rows removed), by fitzpatrick_scale.
README_STRICT = {
    "MEL": [133, 198, 108, 60, 32, 15, 27],
    "NV": [68, 60, 48, 33, 17, 6, 3],
    "BCC": [132, 215, 125, 78, 26, 7, 13],
    "AK": [33, 72, 30, 21, 11, 1, 7],
    "BKL": [15, 31, 8, 5, 5, 3, 1],
    "DF": [16, 30, 24, 7, 1, 0, 1],
    "VASC": [53, 66, 37, 17, 10, 1, 4],
}


def import_file(fmt, file_name, mapping="strict", **kwargs):
    path = DATA / file_name
    return dataset_import(
        fmt=fmt, metadata=path.read_bytes(), metadata_name=path.name, mapping=mapping, **kwargs
    )


def scale_label(image):
    """The dataset's own FST column: unknown unless the FST came from it."""
    return ROMAN[image["fst_low"]] if image["fst_source"] == FstSource.DATASET else "?"


@pytest.fixture(scope="module")
def fitzpatrick(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        result = import_file("fitzpatrick17k", "fitzpatrick17k.csv")
        images = list(
            Image.objects.filter(dataset=result.dataset).values(
                "diagnosis", "fst_low", "fst_source", "fst_second", "metadata"
            )
        )
        yield result, images
        Dataset.objects.all().delete()


def test_fitzpatrick17k_fst_counts_after_qc_exclusion(fitzpatrick):
    result, images = fitzpatrick
    assert len(images) == 16_560
    assert len(result.excluded) == 17
    assert all(
        row[2] == "qc '3 Wrongly labelled'" or "Wrongly" in row[2] for row in result.excluded
    )
    counts = Counter(scale_label(i) for i in images)
    assert counts == {
        "?": 565,
        "I": 2944,
        "II": 4804,
        "III": 3306,
        "IV": 2780,
        "V": 1529,
        "VI": 632,
    }


def test_fitzpatrick17k_strict_mapping_table_matches_the_readme(fitzpatrick):
    _, images = fitzpatrick
    table = Counter((i["diagnosis"], scale_label(i)) for i in images)
    for dx, expected in README_STRICT.items():
        got = [table[(dx, col)] for col in ("I", "II", "III", "IV", "V", "VI", "?")]
        assert got == expected, dx
    assert sum(n for (dx, _), n in table.items() if dx != "OTHER") == 1_914


def test_unknown_fst_falls_back_to_the_second_label_and_says_so(fitzpatrick):
    _, images = fitzpatrick
    second = [i for i in images if i["fst_source"] == FstSource.SECOND_LABEL]
    unknown = [i for i in images if i["fst_low"] is None]
    assert len(second) + len(unknown) == 565
    assert second and all(i["fst_low"] == i["fst_second"] for i in second)


def test_fitzpatrick17k_summary_is_stored_with_the_import(fitzpatrick):
    result, _ = fitzpatrick
    assert result.summary["images"] == 16_560
    assert result.summary["missing_files"] == 16_560  # metadata only: every file missing
    assert result.summary["columns"] == ["I", "II", "III", "IV", "V", "VI", "?"]
    df = next(r for r in result.summary["rows"] if r["diagnosis"] == "DF")
    assert df["counts"][5] == 0  # DF x VI: the empty cell FairSkin exists for


def test_broad_mapping_maps_2840_images():
    result = import_file("fitzpatrick17k", "fitzpatrick17k.csv", mapping="broad", name="f17k-b")
    mapped = result.dataset.images.exclude(diagnosis="OTHER").count()
    assert mapped == 2_840


def test_ddi_records_skin_tone_groups_as_ranges():
    result = import_file("ddi", "ddi_metadata.csv")
    ranges = Counter(result.dataset.images.values_list("fst_low", "fst_high"))
    assert ranges == {(1, 2): 208, (3, 4): 241, (5, 6): 204}
    assert result.dataset.images.filter(metadata__malignant=True).count() == 170
    assert result.summary["columns"] == ["I–II", "III–IV", "V–VI", "?"]


def test_ham10000_keeps_lesions_maps_akiec_and_is_textual_inversion_only():
    result = import_file("ham10000", "HAM10000_metadata.csv")
    images = result.dataset.images
    assert images.count() == 10_015
    assert images.values("group_id").distinct().count() == 7_470
    assert images.filter(diagnosis="AK").count() == 327
    assert images.filter(fst_low__isnull=False).count() == 0
    assert result.dataset.allowed_use == AllowedUse.TEXTUAL_INVERSION_ONLY
    assert result.dataset.licence == "CC BY-NC 4.0"


def test_older_fitzpatrick17k_release_imports_the_same_images():
    older = import_file("fitzpatrick17k", "fitzpatrick17k_older_release_sample.csv", name="old")
    current = import_file("fitzpatrick17k", "fitzpatrick17k.csv", name="new")
    assert older.variant == "fitzpatrick17k-older"
    fields = ("source_id", "diagnosis", "source_label", "fst_low", "fst_high")
    old_rows = set(older.dataset.images.values_list(*fields))
    new_rows = set(
        current.dataset.images.filter(source_id__in=[r[0] for r in old_rows]).values_list(*fields)
    )
    # The older release has no second label, so compare rows whose FST came from the scale.
    old_rows = {r for r in old_rows if r[3] is not None}
    assert old_rows and old_rows <= new_rows
    assert len(older.excluded) == 17


def test_reimport_changes_nothing():
    first = import_file("ddi", "ddi_metadata.csv")
    before = list(Image.objects.order_by("pk").values())
    second = import_file("ddi", "ddi_metadata.csv")
    assert (second.created, second.updated, second.unchanged) == (0, 0, 653)
    assert list(Image.objects.order_by("pk").values()) == before
    assert first.dataset == second.dataset


def test_summary_counts_agree_with_the_database():
    result = import_file("ddi", "ddi_metadata.csv")
    per_dx = dict(result.dataset.images.values_list("diagnosis").annotate(n=Count("id")))
    assert {r["diagnosis"]: r["total"] for r in result.summary["rows"]} == per_dx
