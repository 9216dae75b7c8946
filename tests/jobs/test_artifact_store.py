"""Issue 20: artifacts in an S3-compatible bucket (moto, authentication on), read by hosts
that share no disk, and what a bad store does: a missing bucket, refused credentials, an object
deleted under a run, an object whose bytes changed. Each is a clear error that changes nothing.
Jobs run in this process (`train --wait`, execute_job); real workers on separate folders are
tests/faults/test_hosts_share_only_a_bucket.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from fairskin.store.errors import ArtifactCorrupt, ArtifactMissing
from fairskin.store.trees import read_manifest
from generation.errors import BatchConfigError
from generation.models import Batch
from generation.services import batch_create
from jobs import artifacts
from jobs.runner import execute_job
from tests.factories import RunFactory, make_user
from training.models import Run
from training.services import run_create

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

FAST = ["--set", "validation_every=1000", "--set", "validation_inference_steps=1"]
FAST += ["--set", "grad_accumulation=1", "--set", "lr_warmup_steps=0"]


@pytest.fixture
def trained(bucket_site, capsys) -> Run:
    """A textual-inversion run trained here with `train --wait` into the bucket."""
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()
    call_command(
        "train", "--kind", "textual_inversion", "--dataset", "demo", "--steps", "2", "--wait",
        *FAST, "--set", "checkpoint_every=1",
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    run = Run.objects.get(pk=int(lines[-2]))
    # The command's contract: the run id, then where the artifacts are (now the bucket's URI).
    bucket = bucket_site["AWS_STORAGE_BUCKET_NAME"]
    assert lines[-1] == f"s3://{bucket}/runs/{run.identity}"
    return run


def another_host(settings, tmp_path: Path, name: str) -> Path:
    """Switch this process to a host with an empty folder of its own."""
    folder = tmp_path / name
    settings.FAIRSKIN_ARTIFACTS_ROOT = folder
    return folder


def test_a_run_is_published_whole_and_another_host_fetches_it_once(trained, settings, tmp_path):
    manifest = read_manifest(artifacts.store(), trained.artifacts_dir)
    assert manifest.complete
    names = set(manifest.files)
    assert {"manifest.json", "loss.csv", "identity.json"} <= names
    assert any(n.startswith("embeddings/") for n in names)
    assert any(n.startswith("checkpoints/step-") for n in names)
    assert not any(".partial" in n or n.startswith("parallel/") for n in names)

    folder = another_host(settings, tmp_path, "host-b")
    fetched = artifacts.fetch(trained.artifacts_dir)
    assert fetched == folder / trained.artifacts_dir
    for rel, entry in manifest.files.items():
        assert hashlib.sha256((fetched / rel).read_bytes()).hexdigest() == entry.sha256
    # Once on this host, nothing is downloaded again: not even with the object gone from the
    # bucket, a fetch finds the folder in place, and a file lost from it comes from the cache.
    artifacts.store().delete([f"{trained.artifacts_dir}/loss.csv"])
    assert artifacts.fetch(trained.artifacts_dir) == fetched
    (fetched / "loss.csv").unlink()
    artifacts.fetch(trained.artifacts_dir)
    digest = hashlib.sha256((fetched / "loss.csv").read_bytes()).hexdigest()
    assert digest == manifest.files["loss.csv"].sha256


def test_the_run_page_and_a_download_read_the_bucket_not_the_trainers_disk(
    trained, settings, tmp_path, client
):
    web = another_host(settings, tmp_path, "web")
    client.force_login(make_user("engineer"))
    page = client.get(reverse("training:run", args=[trained.pk])).content.decode()
    assert f"s3://{settings.AWS_STORAGE_BUCKET_NAME}/runs/{trained.identity}" in page
    assert "loss.csv" in page and 'data-testid="store-error"' not in page
    answer = client.get(reverse("training:artifact", args=[trained.pk, "loss.csv"]))
    body = b"".join(answer.streaming_content)
    stored = read_manifest(artifacts.store(), trained.artifacts_dir).files["loss.csv"]
    assert hashlib.sha256(body).hexdigest() == stored.sha256
    assert answer["Content-Type"].startswith("text/csv")
    assert not list(web.rglob("checkpoints")), "a page never fetches checkpoints"


def test_an_object_deleted_under_a_run_is_named_and_changes_nothing(trained, settings, tmp_path):
    manifest = read_manifest(artifacts.store(), trained.artifacts_dir)
    victim = next(n for n in manifest.files if n.startswith("embeddings/"))
    artifacts.store().delete([f"{trained.artifacts_dir}/{victim}"])
    folder = another_host(settings, tmp_path, "host-b")
    with pytest.raises(ArtifactMissing, match=victim.replace(".", r"\.")):
        artifacts.fetch(trained.artifacts_dir)
    assert not (folder / trained.artifacts_dir / victim).exists()

    # A LoRA on that run fails with the object's name; nothing of it is published.
    lora = run_create(
        kind="lora",
        parent=trained,
        selection={"datasets": ["demo"]},
        config={"steps": 2, "validation_every": 1000, "grad_accumulation": 1},
    )
    assert execute_job(job_id=lora.job_id) == "failed"
    lora.job.refresh_from_db()
    assert victim in lora.job.error
    with pytest.raises(ArtifactMissing):
        read_manifest(artifacts.store(), lora.artifacts_dir)


def test_an_object_whose_bytes_changed_is_fetched_again_then_refused(trained, settings, tmp_path):
    manifest = read_manifest(artifacts.store(), trained.artifacts_dir)
    key = f"{trained.artifacts_dir}/loss.csv"
    artifacts.store().put_bytes(key, b"step,loss\n1,0.0\n")  # not what the manifest says
    folder = another_host(settings, tmp_path, "host-b")
    with pytest.raises(ArtifactCorrupt, match="loss.csv"):
        artifacts.fetch(trained.artifacts_dir)
    assert not (folder / trained.artifacts_dir / "loss.csv").exists()
    cache = artifacts.host_cache()
    assert not any(p.is_file() for p in (cache.root / "objects").rglob("*")
                   if p.name == manifest.files["loss.csv"].sha256)  # fmt: skip


def test_a_missing_bucket_or_refused_credentials_stop_the_upload_command_before_anything(
    trained, settings, tmp_path
):
    before = Run.objects.get(pk=trained.pk).artifacts_dir
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket-fairskin"
    with pytest.raises(CommandError, match="no-such-bucket-fairskin") as caught:
        call_command("upload_artifacts")
    assert "no row was changed" in str(caught.value)
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_SECRET_ACCESS_KEY = "wrong-secret"
    with pytest.raises(CommandError, match="credentials"):
        call_command("upload_artifacts")
    assert Run.objects.get(pk=trained.pk).artifacts_dir == before


def test_a_page_says_when_the_store_refuses_it(trained, settings, tmp_path, client):
    another_host(settings, tmp_path, "web")
    settings.AWS_SECRET_ACCESS_KEY = "wrong-secret"
    client.force_login(make_user("engineer"))
    answer = client.get(reverse("training:run", args=[trained.pk]))
    assert answer.status_code == 200
    assert 'data-testid="store-error"' in answer.content.decode()


def test_upload_artifacts_moves_a_local_installation_into_the_bucket_idempotently(
    bucket_site, settings, tmp_path, capsys
):
    # A local installation: runs recorded by host path, in a folder outside any root.
    old = tmp_path / "old-install" / "runs" / "run-1-abc"
    (old / "embeddings").mkdir(parents=True)
    (old / "embeddings" / "dx-mel.safetensors").write_bytes(b"weights" * 100)
    (old / "manifest.json").write_text(json.dumps({"steps": 3}))
    (old / "checkpoints" / "step-000002.partial").mkdir(parents=True)  # never published
    (old / "checkpoints" / "step-000002.partial" / "state.pt").write_bytes(b"x")
    run = Run.objects.create(kind="textual_inversion", base_model="tiny", identity="run-1-abc")
    Run.objects.filter(pk=run.pk).update(artifacts_dir=str(old))
    missing = Run.objects.create(kind="textual_inversion", base_model="tiny", identity="run-2-x")
    Run.objects.filter(pk=missing.pk).update(artifacts_dir=str(tmp_path / "gone" / "run-2-x"))

    call_command("upload_artifacts", "--dry-run")
    out = capsys.readouterr().out
    assert "would publish" in out and Run.objects.get(pk=run.pk).artifacts_dir == str(old)
    with pytest.raises(ArtifactMissing):
        read_manifest(artifacts.store(), "runs/run-1-abc")

    call_command("upload_artifacts")
    out = capsys.readouterr().out
    assert f"run {run.pk}: published" in out and "(2 files)" in out
    assert f"run {missing.pk}: left as it is" in out
    assert Run.objects.get(pk=run.pk).artifacts_dir == "runs/run-1-abc"
    assert Run.objects.get(pk=missing.pk).artifacts_dir.endswith("gone/run-2-x")
    files = read_manifest(artifacts.store(), "runs/run-1-abc").files
    assert set(files) == {"embeddings/dx-mel.safetensors", "manifest.json"}

    # Again: the row already names the key; nothing changes, and a new host fetches it.
    settings.FAIRSKIN_ARTIFACTS_ROOT = tmp_path / "old-install"  # the folder is the key's
    call_command("upload_artifacts")
    assert f"run {run.pk}: published" in capsys.readouterr().out
    assert read_manifest(artifacts.store(), "runs/run-1-abc").files == files
    another_host(settings, tmp_path, "host-b")
    call_command("upload_artifacts")  # on a host without the folder: nothing to do
    out = capsys.readouterr().out
    assert f"run {run.pk}: already in the store at s3://" in out
    assert "1 are in the store; 1 left as they are" in out
    folder = artifacts.fetch("runs/run-1-abc")
    assert (folder / "embeddings" / "dx-mel.safetensors").read_bytes() == b"weights" * 100


def test_a_running_jobs_folder_reaches_the_bucket_as_it_changes_and_outlives_an_outage(
    bucket_site, settings, tmp_path
):
    ref = "runs/run-9-sync"
    folder = artifacts.local_folder(ref)
    (folder / "checkpoints" / "step-000005").mkdir(parents=True)
    (folder / "checkpoints" / "step-000005" / "state.pt").write_bytes(b"five")
    (folder / "loss.csv").write_text("step,loss\n1,0.5\n")
    sync = artifacts.ArtifactSync(ref, every=3600)
    secret = settings.AWS_SECRET_ACCESS_KEY
    settings.AWS_SECRET_ACCESS_KEY = "wrong-secret"  # an outage: the store refuses
    sync.sync_once()
    assert sync.published == 0 and "credentials" in (sync.error or "")
    settings.AWS_SECRET_ACCESS_KEY = secret
    sync.sync_once()  # the next round publishes what the failed one could not
    manifest = read_manifest(artifacts.store(), ref)
    assert sync.published == 1 and sync.error is None and not manifest.complete
    assert artifacts.latest_checkpoint_step(manifest.files) == 5
    sync.sync_once()  # nothing changed: nothing published
    assert sync.published == 1
    # A checkpoint being written (.partial) is never published; a whole one is, and the
    # checkpoint the run deleted goes from the bucket too.
    (folder / "checkpoints" / "step-000010.partial").mkdir()
    (folder / "checkpoints" / "step-000010.partial" / "state.pt").write_bytes(b"half")
    sync.sync_once()
    assert artifacts.latest_checkpoint_step(read_manifest(artifacts.store(), ref).files) == 5
    (folder / "checkpoints" / "step-000010.partial").rename(folder / "checkpoints" / "step-000010")
    (folder / "checkpoints" / "step-000005" / "state.pt").unlink()
    (folder / "checkpoints" / "step-000005").rmdir()
    sync.sync_once()
    files = read_manifest(artifacts.store(), ref).files
    assert set(files) == {"loss.csv", "checkpoints/step-000010/state.pt"}
    assert artifacts.store().list_keys(f"{ref}/checkpoints/step-000005") == []
    # Another host resumes from it: the store's checkpoint is newer than its (empty) folder.
    settings.FAIRSKIN_ARTIFACTS_ROOT = tmp_path / "host-b"
    assert artifacts.fetch_for_resume(ref) == 10
    resumed = artifacts.local_folder(ref) / "checkpoints" / "step-000010" / "state.pt"
    assert resumed.read_bytes() == b"half"


def test_a_page_on_the_training_host_reads_a_copy_and_never_rewinds_the_running_folder(
    bucket_site, settings
):
    ref = "runs/run-7-live"
    folder = artifacts.local_folder(ref)
    folder.mkdir(parents=True)
    (folder / "loss.csv").write_text("step,loss\n1,0.5\n")
    artifacts.publish(ref, complete=False)  # what the sync last uploaded
    with (folder / "loss.csv").open("a") as fh:  # the job trains on
        fh.write("2,0.4\n")
    page = artifacts.read_folder(ref, lambda rel: rel == "loss.csv")
    assert page is not None and page != folder
    assert (page / "loss.csv").read_text() == "step,loss\n1,0.5\n"
    assert (folder / "loss.csv").read_text() == "step,loss\n1,0.5\n2,0.4\n"


def test_a_host_path_from_before_the_store_is_refused_with_the_command_that_moves_it(
    bucket_site, tmp_path
):
    with pytest.raises(artifacts.LegacyLocation, match="/elsewhere/runs/run-3-old") as caught:
        artifacts.fetch("/elsewhere/runs/run-3-old")
    assert "run `manage.py upload_artifacts` on the host that holds" in str(caught.value)
    # A batch on such a run is refused with the same reason, before anything is created.
    ti = RunFactory(kind="textual_inversion", job__state="succeeded")
    Run.objects.filter(pk=ti.pk).update(artifacts_dir="/elsewhere/runs/run-3-old")
    lora = RunFactory(kind="lora", parent=Run.objects.get(pk=ti.pk), job__state="succeeded")
    with pytest.raises(BatchConfigError, match="upload_artifacts"):
        batch_create(model_run=Run.objects.get(pk=lora.pk), target=4, diagnoses=["MEL"])
    assert not Batch.objects.exists()
