from collections import defaultdict
from pathlib import Path

import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from catalog.importing import dataset_import
from catalog.models import Dataset, FstSource, Image
from catalog.services import dataset_preprocess_launch, dataset_split
from fairskin.datasets.sources import FolderImages
from fairskin.imaging.demo import draw_lesion
from jobs.runner import execute_job

pytestmark = pytest.mark.django_db
DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


def test_ham10000_split_keeps_every_lesion_in_one_split_and_is_reproducible():
    path = DATA / "HAM10000_metadata.csv"
    dataset = dataset_import(
        fmt="ham10000", metadata=path.read_bytes(), metadata_name=path.name
    ).dataset
    counts = dataset_split(dataset=dataset, seed=11)
    assert sum(counts.values()) == 10_015
    assert counts["train"] / 10_015 == pytest.approx(0.7, abs=0.01)
    splits_by_lesion = defaultdict(set)
    for lesion, split in dataset.images.values_list("group_id", "split"):
        splits_by_lesion[lesion].add(split)
    assert max(len(s) for s in splits_by_lesion.values()) == 1  # no leakage
    first = dict(dataset.images.values_list("pk", "split"))
    dataset_split(dataset=dataset, seed=11)
    assert dict(dataset.images.values_list("pk", "split")) == first
    dataset.refresh_from_db()
    assert dataset.split_seed == 11 and dataset.split_fractions == [0.7, 0.15, 0.15]


def test_split_command_refuses_fractions_that_do_not_add_up(capsys):
    Dataset.objects.create(name="x", source_format="csv")
    with pytest.raises(Exception, match="add up to 1"):
        call_command("split_dataset", "x", "--fractions", "0.5", "0.5", "0.5")


@pytest.fixture
def drawn_dataset(tmp_path):
    folder = tmp_path / "drawn"
    folder.mkdir()
    rows = ["file,diagnosis,fst,group_id"]
    for i, (dx, fst, label) in enumerate([("MEL", 6, "6"), ("NV", 1, ""), ("BCC", 4, "4")]):
        name = f"img{i}.png"
        image = draw_lesion(dx, fst, seed=i, size=700, hair=True)
        image.crop((0, 0, 700, 600)).save(folder / name)  # not square, to check the crop
        rows.append(f"{name},{dx},{label},")
    return dataset_import(
        fmt="csv",
        metadata="\n".join(rows).encode(),
        metadata_name="drawn.csv",
        images=FolderImages(folder),
        name="drawn",
    ).dataset


def test_preprocessing_job_makes_512_derivatives_and_estimates_missing_fst(drawn_dataset):
    job = dataset_preprocess_launch(dataset=drawn_dataset, hair_removal=True, enqueue=False)
    assert execute_job(job_id=job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.result["processed"] == 3 and job.result["failed"] == []
    for image in Image.objects.filter(dataset=drawn_dataset):
        with image.preprocessed.open("rb") as fh:
            derivative = PILImage.open(fh)
            assert (derivative.size, derivative.format, derivative.mode) == (
                (512, 512),
                "PNG",
                "RGB",
            )
        assert image.thumbnail and image.hair_removed
        assert image.ita is not None and 1 <= image.fst_ita <= 6
        assert image.metadata["ita_method"] == "ita-kinyanjui2020"
    unlabelled = Image.objects.get(dataset=drawn_dataset, source_id="img1.png")
    assert unlabelled.fst_source == FstSource.ITA
    assert unlabelled.fst_low == unlabelled.fst_ita
    labelled = Image.objects.get(dataset=drawn_dataset, source_id="img0.png")
    assert (labelled.fst_low, labelled.fst_source) == (6, FstSource.DATASET)  # human label kept


def test_preprocessing_skips_done_images_unless_forced(drawn_dataset):
    first = dataset_preprocess_launch(dataset=drawn_dataset, enqueue=False)
    execute_job(job_id=first.pk)
    again = dataset_preprocess_launch(dataset=drawn_dataset, enqueue=False)
    execute_job(job_id=again.pk)
    again.refresh_from_db()
    assert again.result["processed"] == 0
    forced = dataset_preprocess_launch(dataset=drawn_dataset, force=True, enqueue=False)
    execute_job(job_id=forced.pk)
    forced.refresh_from_db()
    assert forced.result["processed"] == 3


def test_seed_demo_is_deterministic_by_seed(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "5", "--name", "demo-a")
    call_command("seed_demo", "--per-class", "2", "--seed", "5", "--name", "demo-b")
    call_command("seed_demo", "--per-class", "2", "--seed", "6", "--name", "demo-c")
    out = capsys.readouterr().out
    assert "ITA estimate vs intended skin type" in out

    def hashes(name):
        return set(Image.objects.filter(dataset__name=name).values_list("sha256", flat=True))

    assert len(hashes("demo-a")) == 14
    assert hashes("demo-a") == hashes("demo-b")
    assert hashes("demo-a") != hashes("demo-c")
    demo = Dataset.objects.get(name="demo-a")
    assert demo.images.filter(preprocessed="").count() == 0
    assert demo.images.filter(split="").count() == 0
    assert set(demo.images.values_list("diagnosis", flat=True)) == {
        "MEL",
        "NV",
        "BCC",
        "AK",
        "BKL",
        "DF",
        "VASC",
    }


def test_seed_demo_if_missing_does_not_seed_twice(capsys):
    call_command("seed_demo", "--per-class", "1", "--name", "d1")
    call_command("seed_demo", "--per-class", "1", "--name", "d1", "--if-missing")
    assert "not seeding it again" in capsys.readouterr().out
    assert Image.objects.filter(dataset__name="d1").count() == 7


def test_seed_demo_export_writes_upload_files_that_import_as_the_seeded_images(capsys, tmp_path):
    call_command("seed_demo", "--export", str(tmp_path), "--per-class", "2", "--seed", "5")
    assert Dataset.objects.count() == 0  # exporting imports nothing
    metadata, archive = tmp_path / "demo.csv", tmp_path / "demo-images.zip"
    assert capsys.readouterr().out.split() == [str(metadata), str(archive)]
    call_command(
        "import_dataset",
        "--format",
        "csv",
        "--metadata",
        str(metadata),
        "--images",
        str(archive),
        "--name",
        "uploaded",
    )
    call_command("seed_demo", "--per-class", "2", "--seed", "5", "--name", "seeded")
    uploaded = Image.objects.filter(dataset__name="uploaded")
    assert uploaded.count() == 14 and not uploaded.filter(missing_file=True).exists()
    assert set(uploaded.values_list("sha256", flat=True)) == set(
        Image.objects.filter(dataset__name="seeded").values_list("sha256", flat=True)
    )
