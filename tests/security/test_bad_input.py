"""The hostile-input corpus (tests/security/corpus.py) through the paths a user takes: the
admin's upload form and the import job it queues, and the launch commands and forms of runs
and batches. Each input is refused with a message that says what is wrong, and nothing is
written: no dataset, image, import, run, batch or job row, and no stored file.

The engine's parsers and archive checks have their own unit tests
(tests/fairskin/datasets/, tests/fairskin/imaging/test_decode.py) and the import service its
own (tests/catalog/test_import_bad_input.py); this file drives the same refusals end to end
from the entry points, with the inputs those tests do not have.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Dataset, DatasetImport, Image
from generation.models import Batch
from jobs.models import Job, JobState
from jobs.runner import execute_job
from tests.factories import RunFactory, make_user
from tests.security import corpus
from training.models import Run

pytestmark = pytest.mark.django_db

GOOD_CSV = b"file,diagnosis,fst\na.png,MEL,5\n"


@pytest.fixture
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


@pytest.fixture
def engineer(client):
    client.force_login(make_user("engineer"))
    return client


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def catalog_rows() -> tuple[int, int, int]:
    return Dataset.objects.count(), Image.objects.count(), DatasetImport.objects.count()


def upload(client, metadata: bytes, images: bytes | None = None):
    data = {
        "format": "csv",
        "name": "hostile",
        "mapping": "strict",
        "metadata": SimpleUploadedFile("meta.csv", metadata),
    }
    if images is not None:
        data["images"] = SimpleUploadedFile("images.zip", images)
    return client.post(reverse("admin:catalog_dataset_import"), data)


@pytest.mark.parametrize("name", sorted(corpus.CSVS))
def test_hostile_metadata_is_refused_on_the_upload_form(engineer, media, name):
    entry = corpus.CSVS[name]
    page = upload(engineer, entry.data)
    assert page.status_code == 200  # the form again, with the reason
    errors = " ".join(page.context["form"].non_field_errors())
    assert "meta.csv" in errors and entry.message in errors, errors
    assert catalog_rows() == (0, 0, 0) and Job.objects.count() == 0
    assert stored_files(media) == []


@pytest.mark.parametrize("name", sorted(corpus.archives()))
def test_hostile_archive_is_refused_on_the_upload_form(engineer, media, name):
    entry = corpus.archives()[name]
    page = upload(engineer, GOOD_CSV, entry.data)
    assert page.status_code == 200
    errors = " ".join(page.context["form"].non_field_errors())
    assert "images.zip" in errors and entry.message in errors, errors
    assert catalog_rows() == (0, 0, 0) and Job.objects.count() == 0
    assert stored_files(media) == []


@pytest.mark.parametrize("name", sorted(corpus.images()))
def test_hostile_image_fails_the_import_job_and_writes_nothing(
    engineer, media, django_capture_on_commit_callbacks, name
):
    entry = corpus.images()[name]
    buffer = corpus.zip_of([("upload/a.png", entry.data)])
    with django_capture_on_commit_callbacks(execute=False):
        response = upload(engineer, GOOD_CSV, buffer)
    assert response.status_code == 302  # the archive itself is sound: the import is queued
    job = Job.objects.get(kind="catalog.import")
    assert execute_job(job_id=job.pk) == "failed"
    job.refresh_from_db()
    # The job page shows which file of which row, and why.
    assert "'a.png'" in job.error and "data row 1" in job.error and entry.message in job.error
    assert catalog_rows() == (0, 0, 0)
    assert stored_files(media) == []  # no original kept, and the upload itself deleted


def test_a_very_wide_header_is_refused_with_the_reason(engineer, media):
    """Repeated column names were found by counting each name in the whole header, which kept
    the web request busy for hours at 200,000 columns; now it is one pass (a quadratic check
    would run into the suite's timeout here, so no clock is asserted)."""
    columns = 200_000
    text = "file,diagnosis," + ",".join(f"c{i}" for i in range(columns - 2)) + "\na.png,MEL\n"
    page = upload(engineer, text.encode())
    assert f"has 2 fields but the header has {columns}" in " ".join(
        page.context["form"].non_field_errors()
    )
    assert catalog_rows() == (0, 0, 0) and Job.objects.count() == 0


def test_a_metadata_file_over_the_limit_is_refused_before_it_is_parsed(engineer, media, settings):
    settings.FAIRSKIN_MAX_METADATA_BYTES = len(GOOD_CSV) - 1
    page = upload(engineer, GOOD_CSV)
    errors = " ".join(page.context["form"].non_field_errors())
    assert "meta.csv is 0.0 MiB; metadata files are limited to" in errors
    assert "FAIRSKIN_MAX_METADATA_BYTES" in errors
    assert catalog_rows() == (0, 0, 0) and Job.objects.count() == 0
    settings.FAIRSKIN_MAX_METADATA_BYTES = len(GOOD_CSV)
    assert upload(engineer, GOOD_CSV).status_code == 302  # at the limit: accepted


def test_a_wide_but_well_formed_csv_imports_its_extra_columns_as_text(
    engineer, media, django_capture_on_commit_callbacks
):
    """10,000 columns are not an error when every row has them: they are kept as metadata
    text. A formula in such a column is stored as the text it is; no CSV the app writes
    (batch, fairness, release exports) carries imported metadata."""
    names = [f"c{i}" for i in range(corpus.WIDE - 2)]
    cells = ['=HYPERLINK(""https://evil.example"")'] + ["x"] * (len(names) - 1)
    text = (
        "file,diagnosis,"
        + ",".join(names)
        + "\na.png,MEL,"
        + ",".join(f'"{c}"' for c in cells)
        + "\n"
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert upload(engineer, text.encode()).status_code == 302
    assert execute_job(job_id=Job.objects.get(kind="catalog.import").pk) == "succeeded"
    image = Image.objects.get()
    assert len(image.metadata) == corpus.WIDE - 2
    assert image.metadata["c0"] == '=HYPERLINK("https://evil.example")'


def test_the_corpus_writes_to_files_for_manual_use(tmp_path):
    paths = corpus.write_corpus(tmp_path)
    assert len(paths) == len(corpus.CSVS) + len(corpus.images()) + len(corpus.archives())
    assert sum(p.stat().st_size for p in paths) < 1_000_000
    assert zipfile.is_zipfile(tmp_path / "zips" / "symlink-member-to-etc-passwd.zip")


# --- run and batch configurations ----------------------------------------------------------

TRAIN_SETTINGS = {
    # wrong type
    "lora_dropout=high": "lora_dropout must be a number, got 'high'",
    "weight_decay=abc": "weight_decay must be a number",
    "lr_warmup_steps=ten": "lr_warmup_steps must be a whole number",
    "steps=1.5": "steps must be a whole number",
    "batch_size=true": "batch_size must be a whole number, got True",
    "seed=abc": "seed must be a whole number",
    "balanced_sampling=no": "balanced_sampling must be true or false",
    "snr_gamma=strong": "snr_gamma must be a number or null",
    "resolution=big": "resolution must be a whole number or null",
    "lora_targets=5": "lora_targets must be a list of names",
    'fst_shares={"1-3": "most"}': "fst_shares must be an object mapping names to numbers",
    "fst_shares=0.5": "fst_shares must be an object mapping names to numbers",
    "learning_rate=Infinity": "learning_rate must be a number",
    # an integer too large for a float, and one too long for Python's JSON reader
    "learning_rate=1" + "0" * 400: "learning_rate must be a number",
    "steps=" + "9" * 5000: "steps must be a whole number",
    # out of range
    "lora_dropout=1.5": "lora_dropout must be in [0, 1)",
    "mixed_precision=fp8": "mixed_precision must be one of no, fp16, bf16",
    "resolution=30": "resolution must be a multiple of 8",
    "lr_num_cycles=0": "lr_num_cycles >= 1",
    # unknown key, and no value at all
    "vibes=1": "unknown setting(s): vibes",
    "lora_rank": "--set takes KEY=VALUE",
}

CLASSIFIER_SETTINGS = {
    "learning_rate=fast": "learning_rate must be a number",
    "synthetic_shares=0.5": "synthetic_shares must be an object mapping names to numbers",
    'synthetic_shares={"V": 0.5}': "synthetic_shares maps skin types 1-6",
    'synthetic_shares={"7": 0.5}': "synthetic_shares maps skin types 1-6",
    "dann_strength=lots": "dann_strength must be a number",
    "weights=5": "weights must be text without NUL bytes or null",
    "epochs=ten": "epochs must be a whole number",
}


def _runs_and_jobs() -> tuple[int, int]:
    return Run.objects.count(), Job.objects.count()


@pytest.mark.parametrize(
    ("kind", "setting", "message"),
    [
        *[pytest.param("lora", s, m, id=f"lora {s}") for s, m in TRAIN_SETTINGS.items()],
        *[
            pytest.param("classifier", s, m, id=f"classifier {s}")
            for s, m in CLASSIFIER_SETTINGS.items()
        ],
    ],
)
def test_bad_run_settings_are_refused_by_name(kind, setting, message):
    before = _runs_and_jobs()
    with pytest.raises(CommandError) as err:
        call_command("train", "--kind", kind, "--dataset", "demo", "--set", setting)
    assert message in str(err.value)
    assert _runs_and_jobs() == before


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("lora", {"lora_dropout": "high"}, "lora_dropout must be a number"),
        ("lora", {"fst_shares": [0.4, 0.2, 0.4]}, "fst_shares must be an object"),
        ("textual_inversion", {"lora_targets": "to_q"}, "lora_targets must be a list of names"),
        ("classifier", {"synthetic_shares": {"one": 0.2}}, "synthetic_shares maps skin types"),
        # The settings are stored as JSON in PostgreSQL, whose text cannot hold a NUL byte.
        ("classifier", {"weights": "/models/resnet\u0000.pth"}, "weights must be text without NUL"),
        ("lora", {"learning_rate": 10**400}, "learning_rate must be a number"),
    ],
)
def test_the_admin_launch_form_shows_bad_settings_instead_of_failing(client, kind, config, message):
    client.force_login(make_user("engineer"))
    dataset = Dataset.objects.create(name="demo", source_format="csv")
    before = _runs_and_jobs()
    page = client.post(
        reverse("admin:training_run_launch"),
        {"kind": kind, "datasets": [dataset.name], "split": "train", "config": json.dumps(config)},
    )
    assert page.status_code == 200
    assert message in " ".join(page.context["form"].non_field_errors())
    assert _runs_and_jobs() == before


def test_the_admin_launch_form_refuses_a_number_too_long_to_read(client):
    client.force_login(make_user("engineer"))
    dataset = Dataset.objects.create(name="demo", source_format="csv")
    before = _runs_and_jobs()
    page = client.post(
        reverse("admin:training_run_launch"),
        {
            "kind": "lora",
            "datasets": [dataset.name],
            "split": "train",
            "config": '{"steps": ' + "9" * 5000 + "}",
        },
    )
    assert page.status_code == 200
    assert "not valid JSON" in " ".join(page.context["form"].errors["config"])
    assert _runs_and_jobs() == before


@pytest.fixture
def lora_model(tmp_path):
    """A finished LoRA run and its textual-inversion parent, as far as validation looks."""
    parent = RunFactory(
        kind="textual_inversion", job__state=JobState.SUCCEEDED, artifacts_dir=str(tmp_path)
    )
    return RunFactory(
        kind="lora", parent=parent, job__state=JobState.SUCCEEDED, artifacts_dir=str(tmp_path)
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("confidence=high", "confidence must be a number or an object"),
        ("apply_uncalibrated=fid", "apply_uncalibrated must be a list of check names"),
        ('fid={"value": 30, "mode": "relative", "percentile": "95"}', "percentile must be in"),
        ("memorization_neighbours=2.5", "memorization_neighbours must be a whole number"),
        ("duplicate_cosine=0", "duplicate_cosine must be in (0, 1]"),
        ("brightness_low=null", "brightness_low must be a number"),
        ('lpips_real={"value": 0.2, "shell": "rm -rf /"}', "unknown key(s) shell"),
    ],
)
def test_bad_batch_scoring_settings_are_refused_by_name(lora_model, setting, message):
    before = (Batch.objects.count(), Job.objects.count(), Dataset.objects.count())
    with pytest.raises(CommandError) as err:
        call_command("generate", "--model", str(lora_model.pk), "--count", "4", "--set", setting)
    assert message in str(err.value) and "Nothing was queued" in str(err.value)
    assert (Batch.objects.count(), Job.objects.count(), Dataset.objects.count()) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scoring": "[1, 2]"}, "scoring settings must be a JSON object"),
        ({"scoring": '{"fid": {"mode": "median"}}'}, "unknown threshold mode"),
        ({"steps": "1e9"}, "Enter a whole number"),
        ({"seed": str(2**40)}, "less than or equal to"),
        ({"target": "-4"}, "greater than or equal to 1"),
    ],
)
def test_the_batch_launch_form_refuses_bad_values(client, lora_model, change, message):
    client.force_login(make_user("engineer"))
    data = {
        "model_run": lora_model.pk,
        "target": 4,
        "overgeneration": 1.5,
        "scheduler": "ddim",
        "steps": 2,
        "guidance": 7.5,
        "seed": 0,
        "shard_size": 8,
        "device_batch": 2,
        "scoring": "{}",
        **{f"fst_{i}": share for i, share in enumerate([0.1, 0.1, 0.15, 0.15, 0.25, 0.25], 1)},
        **change,
    }
    before = (Batch.objects.count(), Job.objects.count(), Dataset.objects.count())
    page = client.post(reverse("admin:generation_batch_launch"), data)
    assert page.status_code == 200
    assert message in page.content.decode()
    assert (Batch.objects.count(), Job.objects.count(), Dataset.objects.count()) == before
