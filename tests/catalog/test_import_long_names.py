"""Long names in an import (issue 13, defect 7).

A generic CSV uses the image's file name as its source id, which was 128 characters wide
while the file name column holds 255: a name of 129-255 characters passed the form and then
failed the job with a bare DataError. Now such names are stored whole, and anything longer
than the column that would hold it is refused up front, on the form and in the import
service, with the file, the row and the limit named and nothing written.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.importing import CatalogImportError, dataset_import
from catalog.models import Dataset, DatasetImport, Image
from fairskin.datasets.sources import ZipImages
from jobs.models import Job
from jobs.runner import execute_job
from tests.factories import image_bytes, make_user

pytestmark = pytest.mark.django_db

STORABLE = 255  # Image.file_name and Image.source_id
LENGTHS = [129, 200, 255, 300]


def long_name(length: int) -> str:
    return "n" * (length - 4) + ".png"


def csv_naming(file_name: str) -> bytes:
    return f"file,diagnosis,fst,group_id\n{file_name},MEL,5,p1\nb.png,NV,,p2\n".encode()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def images_for(file_name: str) -> bytes:
    # A top folder, as zipped datasets often have: members are matched by base name.
    return zip_of(
        {f"top/{file_name}": image_bytes(), "top/b.png": image_bytes(colour=(60, 40, 30))}
    )


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return root


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_nothing_written(root: Path) -> None:
    assert (Dataset.objects.count(), Image.objects.count(), DatasetImport.objects.count()) == (
        0,
        0,
        0,
    )
    assert stored_files(root) == []


def assert_stored_whole(file_name: str) -> None:
    image = Image.objects.get(dataset__name="t", source_id=file_name)
    assert image.file_name == file_name
    assert not image.missing_file and (image.width, image.height) == (64, 48)
    assert default_storage.exists(image.original.name)
    assert image.original.name.endswith(f"{image.sha256}.png")


def assert_refused_naming(message: str, file_name: str) -> None:
    assert file_name in message
    assert f"is {len(file_name)} characters; at most {STORABLE} can be stored" in message


@pytest.mark.parametrize("length", LENGTHS)
def test_service_stores_a_long_file_name_whole_or_refuses_it(media, length):
    file_name = long_name(length)

    def run():
        return dataset_import(
            fmt="csv",
            metadata=csv_naming(file_name),
            metadata_name="meta.csv",
            name="t",
            images=ZipImages(io.BytesIO(images_for(file_name))),
        )

    if length <= STORABLE:
        assert run().created == 2
        assert_stored_whole(file_name)
        assert run().unchanged == 2  # found again by its id: no duplicate, no error
        assert Image.objects.count() == 2
    else:
        with pytest.raises(CatalogImportError) as err:
            run()
        assert str(err.value).startswith("meta.csv, data row 1: image file name ")
        assert_refused_naming(str(err.value), file_name)
        assert_nothing_written(media)


@pytest.mark.parametrize("length", LENGTHS)
def test_command_stores_a_long_file_name_whole_or_refuses_it(media, tmp_path, length):
    file_name = long_name(length)
    metadata = tmp_path / "meta.csv"
    metadata.write_bytes(csv_naming(file_name))
    archive = tmp_path / "images.zip"
    archive.write_bytes(images_for(file_name))
    args = ["import_dataset", "--format", "csv", "--metadata", str(metadata), "--name", "t"]
    if length <= STORABLE:
        call_command(*args, "--images", str(archive))
        assert_stored_whole(file_name)
        return
    for extra in ([], ["--images", str(archive)]):  # the CSV alone, then with its images
        with pytest.raises(CommandError) as err:
            call_command(*args, *extra)
        assert_refused_naming(str(err.value), file_name)
        assert "Nothing was imported" in str(err.value)
        assert_nothing_written(media)
    # With the archive the zip member is refused first, by its full path.
    assert f"images.zip: zip member 'top/{file_name}'" in str(err.value)


def upload(client, metadata: bytes, images: bytes | None = None, metadata_name="meta.csv"):
    data = {
        "format": "csv",
        "name": "t",
        "mapping": "strict",
        "metadata": SimpleUploadedFile(metadata_name, metadata),
    }
    if images is not None:
        data["images"] = SimpleUploadedFile("images.zip", images)
    return client.post(reverse("admin:catalog_dataset_import"), data)


@pytest.fixture
def engineer(client):
    client.force_login(make_user("engineer"))
    return client


@pytest.mark.parametrize("length", LENGTHS)
def test_admin_upload_stores_a_long_file_name_whole_or_refuses_it_on_the_form(
    engineer, media, django_capture_on_commit_callbacks, length
):
    file_name = long_name(length)
    with django_capture_on_commit_callbacks(execute=False):
        page = upload(engineer, csv_naming(file_name), images_for(file_name))
    if length <= STORABLE:
        assert page.status_code == 302
        job = Job.objects.get(kind="catalog.import")
        assert execute_job(job_id=job.pk) == "succeeded"
        assert_stored_whole(file_name)
        return
    assert page.status_code == 200  # the form again, with the reason
    errors = " ".join(page.context["form"].non_field_errors())
    assert errors.startswith("meta.csv, data row 1: image file name ")
    assert_refused_naming(errors, file_name)
    assert Job.objects.count() == 0
    assert_nothing_written(media)


def test_admin_upload_refuses_a_zip_member_whose_name_no_row_could_hold(engineer, media):
    member = "top/" + long_name(STORABLE + 1)
    page = upload(
        engineer, csv_naming("a.png"), zip_of({"top/a.png": image_bytes(), member: image_bytes()})
    )
    assert page.status_code == 200
    errors = " ".join(page.context["form"].non_field_errors())
    assert errors.startswith(f"images.zip: zip member {member!r}: its file name ")
    assert_refused_naming(errors, long_name(STORABLE + 1))
    assert Job.objects.count() == 0
    assert_nothing_written(media)


def test_admin_upload_of_a_metadata_file_with_a_long_name_imports(
    engineer, media, django_capture_on_commit_callbacks
):
    """The job title (200 characters) holds the metadata file name: it is shortened there,
    and the import keeps the whole name."""
    metadata_name = "m" * 196 + ".csv"
    with django_capture_on_commit_callbacks(execute=False):
        page = upload(engineer, csv_naming("a.png"), metadata_name=metadata_name)
    assert page.status_code == 302
    job = Job.objects.get(kind="catalog.import")
    assert len(job.title) == 200 and job.title.endswith("… into t")
    assert execute_job(job_id=job.pk) == "succeeded"
    assert DatasetImport.objects.get().metadata_name == metadata_name


def test_an_odd_long_suffix_does_not_overflow_the_stored_file_name(media):
    file_name = "a." + "x" * 250
    result = dataset_import(
        fmt="csv",
        metadata=csv_naming(file_name),
        metadata_name="meta.csv",
        name="t",
        images=ZipImages(io.BytesIO(images_for(file_name))),
    )
    assert result.created == 2
    image = Image.objects.get(source_id=file_name)
    assert image.original.name.endswith(f"/{image.sha256}.bin")
    assert default_storage.exists(image.original.name)


FITZPATRICK_HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum\n"
)


@pytest.mark.parametrize(
    ("fmt", "metadata", "message"),
    [
        (
            "csv",
            f"file,diagnosis,group_id\na.png,MEL,{'g' * 256}\n",
            "meta.csv, data row 1: group id 'ggg",
        ),
        (
            "ham10000",
            "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
            f"L1,{'i' * 252},mel,histo,50,male,back\n",
            "meta.csv, data row 1: image file name 'iii",
        ),
        (
            "ham10000",
            "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
            f"{'l' * 256},ISIC_1,mel,histo,50,male,back\n",
            "meta.csv, data row 1: group id 'lll",
        ),
        (
            "ddi",
            f"DDI_ID,DDI_file,skin_tone,malignant,disease\n{'1' * 256},a.png,12,FALSE,x\n",
            "meta.csv, data row 1: source id '111",
        ),
        (
            "fitzpatrick17k",
            FITZPATRICK_HEADER + f"{'a' * 32},3,3,{'w' * 201},,,,,\n",
            "meta.csv, data row 1: label 'www",
        ),
    ],
)
def test_every_bounded_value_is_checked_before_anything_is_written(media, fmt, metadata, message):
    with pytest.raises(CatalogImportError) as err:
        dataset_import(fmt=fmt, metadata=metadata.encode(), metadata_name="meta.csv", name="t")
    assert str(err.value).startswith(message)
    assert "characters; at most" in str(err.value)
    assert_nothing_written(media)


def test_a_metadata_file_name_longer_than_its_column_is_refused(media):
    metadata_name = "m" * 252 + ".csv"
    with pytest.raises(CatalogImportError) as err:
        dataset_import(
            fmt="csv", metadata=csv_naming("a.png"), metadata_name=metadata_name, name="t"
        )
    assert str(err.value) == (
        f"metadata file name {metadata_name!r} is 256 characters; at most 255 can be stored"
    )
    assert_nothing_written(media)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--name", "d" * 65], "dataset name 'ddd"),
        (["--name", "../escape"], "dataset name '../escape': Enter a valid “slug”"),
        (["--name", "t", "--licence", "L" * 201], "licence 'LLL"),
    ],
)
def test_command_refuses_a_dataset_name_or_licence_that_cannot_be_stored(
    media, tmp_path, options, message
):
    metadata = tmp_path / "meta.csv"
    metadata.write_bytes(csv_naming("a.png"))
    with pytest.raises(CommandError) as err:
        call_command("import_dataset", "--format", "csv", "--metadata", str(metadata), *options)
    assert str(err.value).startswith(message) and "Nothing was imported" in str(err.value)
    assert_nothing_written(media)
