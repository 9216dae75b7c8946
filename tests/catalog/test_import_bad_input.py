"""Every refused import names the file and row, writes no row and keeps no new file."""

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from catalog.importing import CatalogImportError, dataset_import
from catalog.models import Dataset, DatasetImport, Image
from fairskin.datasets.sources import FolderImages, ZipImages
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db

GOOD_CSV = "file,diagnosis,fst,group_id\na.png,MEL,5,p1\nb.png,NV,,p2\n"


def stored_files() -> set[str]:
    root = Path(default_storage.location)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


def assert_nothing_written():
    assert Image.objects.count() == 0
    assert Dataset.objects.count() == 0
    assert DatasetImport.objects.count() == 0
    assert stored_files() == set()


def run_import(csv_text, images=None, fmt="csv"):
    return dataset_import(
        fmt=fmt, metadata=csv_text.encode(), metadata_name="meta.csv", images=images, name="t"
    )


@pytest.mark.parametrize(
    ("csv_text", "fmt", "message"),
    [
        ("path,label\nx.png,MEL\n", "csv", "file"),
        ("md5hash,label\nabc,melanoma\n", "fitzpatrick17k", "fitzpatrick"),
        ("file,diagnosis,fst\na.png,MEL,7\n", "csv", "row 1"),
        ("file,diagnosis,fst\na.png,MEL,III\n", "csv", "row 1"),
        ("file,diagnosis\na.png,MEL\na.png,NV\n", "csv", "duplicate"),
        ("file,diagnosis\na.png,melanomaish\n", "csv", "row 1"),
        ("file,diagnosis\n../../etc/passwd,MEL\n", "csv", "row 1"),
        ("file,diagnosis\na.png,MEL,extra\n", "csv", "row 1"),
        ("", "csv", "empty"),
    ],
)
def test_malformed_metadata_is_refused_with_file_and_row(csv_text, fmt, message):
    with pytest.raises(CatalogImportError) as err:
        run_import(csv_text, fmt=fmt)
    assert "meta.csv" in str(err.value)
    assert message.lower() in str(err.value).lower()
    assert_nothing_written()


def test_undecodable_image_stops_the_import_and_removes_stored_files(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes())  # good, stored first
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(CatalogImportError) as err:
        run_import(GOOD_CSV, images=FolderImages(folder))
    assert "data row 2" in str(err.value) and "b.png" in str(err.value)
    assert_nothing_written()


def test_image_over_the_pixel_limit_is_refused(tmp_path, settings):
    settings.FAIRSKIN_MAX_IMAGE_PIXELS = 1000
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(size=(40, 40)))
    with pytest.raises(CatalogImportError, match="pixel limit"):
        run_import(GOOD_CSV, images=FolderImages(folder))
    assert_nothing_written()


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("member", ["../a.png", "/abs/a.png", "dir\\..\\a.png"])
def test_archive_member_with_unsafe_path_is_refused_before_anything(member, tmp_path):
    archive = tmp_path / "images.zip"
    archive.write_bytes(_zip({member: image_bytes()}).getvalue())
    meta = tmp_path / "meta.csv"
    meta.write_text(GOOD_CSV)
    with pytest.raises(CommandError) as err:
        call_command(
            "import_dataset",
            "--format",
            "csv",
            "--metadata",
            str(meta),
            "--images",
            str(archive),
            "--name",
            "t",
        )
    assert repr(member) in str(err.value) and "Nothing was imported" in str(err.value)
    assert_nothing_written()


def test_symlink_leaving_the_image_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes())
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").symlink_to(outside)
    with pytest.raises(CatalogImportError, match="outside"):
        run_import(GOOD_CSV, images=FolderImages(folder))
    assert_nothing_written()


def test_zip_images_import_and_reimport_is_idempotent():
    archive = _zip({"top/a.png": image_bytes(), "top/b.png": image_bytes(colour=(60, 40, 30))})
    first = run_import(GOOD_CSV, images=ZipImages(archive))
    archive.seek(0)
    files_after_first = stored_files()
    second = run_import(GOOD_CSV, images=ZipImages(archive))
    assert (first.created, second.created, second.unchanged) == (2, 0, 2)
    assert stored_files() == files_after_first  # content-addressed: nothing stored twice
    a = Image.objects.get(source_id="a.png")
    assert (a.width, a.height, a.missing_file) == (64, 48, False)
    assert len(a.sha256) == 64 and a.original.name.endswith(f"{a.sha256}.png")
    assert (a.fst_low, a.group_id) == (5, "p1")


def test_missing_files_are_flagged_and_counted(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes())
    result = run_import(GOOD_CSV, images=FolderImages(folder))
    assert result.missing_files == 1
    assert list(Image.objects.filter(missing_file=True).values_list("source_id", flat=True)) == [
        "b.png"
    ]


def test_dataset_name_cannot_switch_format():
    run_import(GOOD_CSV)
    with pytest.raises(CatalogImportError, match="holds csv data"):
        dataset_import(fmt="ddi", metadata=b"x", metadata_name="ddi.csv", name="t")


def test_command_prints_the_summary_table(tmp_path, capsys):
    meta = tmp_path / "meta.csv"
    meta.write_text(GOOD_CSV)
    call_command("import_dataset", "--format", "csv", "--metadata", str(meta), "--name", "t")
    out = capsys.readouterr().out
    assert "created 2" in out and "missing image files: 2" in out
    assert "MEL" in out and "VI" in out
