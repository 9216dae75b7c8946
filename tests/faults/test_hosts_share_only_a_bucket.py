"""Issue 20: GPU hosts that share nothing but PostgreSQL, Redis and a bucket.

Two real Celery workers stand in for two hosts: each has its own artifacts folder, its own
media folder (unused: images are in the bucket) and its own model cache; the bucket is
moto's S3 server with authentication on (tests/s3_server.py). The first worker starts a
textual-inversion run and is SIGKILLed mid-run; its folder is deleted before the second starts,
so nothing can be read from it. The second resumes the run from the checkpoint the first
uploaded, then trains the LoRA, generates a batch, prepares a study and exports the release,
all through the bucket. The web process (this test) has a folder of its own too, and reads
pages and downloads from the store.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from fairskin.store.errors import ArtifactMissing
from fairskin.store.trees import read_manifest
from generation.models import BatchState, Sample
from generation.services import batch_create
from jobs import artifacts
from jobs.models import Job, JobState
from review.models import Release, Study
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve
from review.services.study import study_create
from tests.conftest import wait_for
from tests.factories import make_user
from training.models import Run
from training.services import run_create

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_LEASE = {"FAIRSKIN_JOB_LEASE_SECONDS": "3", "FAIRSKIN_SWEEP_SECONDS": "1"}
QUICK = {
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
}


def host(tmp_path: Path, name: str, env: dict[str, str]) -> dict[str, str]:
    """A worker's environment as a host of its own: no folder shared with anyone."""
    return {
        **env,
        "FAIRSKIN_ARTIFACTS_ROOT": str(tmp_path / f"host-{name}" / "artifacts"),
        "MEDIA_ROOT": str(tmp_path / f"host-{name}" / "media"),
        "FAIRSKIN_MODEL_CACHE": str(tmp_path / f"host-{name}" / "models"),
        "FAIRSKIN_VAR_DIR": str(tmp_path / f"host-{name}" / "var"),
    }


def uploaded_step(run: Run) -> int | None:
    try:
        manifest = read_manifest(artifacts.store(), run.artifacts_dir)
    except ArtifactMissing:  # not published yet
        return None
    return artifacts.latest_checkpoint_step(manifest.files)


def finished(job_id: int, workers, timeout: float = 300) -> Job:
    return wait_for(
        lambda: (job := Job.objects.get(pk=job_id)).is_terminal and job,
        timeout=timeout,
        what=f"job {job_id}",
        workers=workers,
    )


def test_a_run_killed_on_one_host_resumes_on_another_and_the_pipeline_needs_no_shared_disk(
    start_worker, bucket_site, tmp_path, client, capsys
):
    call_command("seed_demo", "--per-class", "6", "--seed", "4")
    capsys.readouterr()
    first = start_worker(queues="gpu,cpu", **FAST_LEASE, **host(tmp_path, "a", bucket_site))
    ti = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"], "diagnoses": ["MEL", "NV"]},
        config={**QUICK, "steps": 40, "checkpoint_every": 5},
    )
    assert ti.artifacts_dir == f"runs/{ti.identity}"  # a key, never a host path

    wait_for(
        lambda: (uploaded_step(ti) or 0) >= 10,
        timeout=180,
        what="a checkpoint past step 10 in the bucket",
        workers=[first],
    )
    first.kill()
    in_bucket = uploaded_step(ti)  # nothing uploads after the kill
    job = Job.objects.get(pk=ti.job_id)
    assert job.state == JobState.RUNNING and in_bucket < 40
    # The first host is gone with its disk: nothing can be read from it.
    shutil.rmtree(tmp_path / "host-a")

    second = start_worker(
        queues="gpu,cpu", WITH_BEAT="1", **FAST_LEASE, **host(tmp_path, "b", bucket_site)
    )
    workers = [first, second]
    done = finished(ti.job_id, workers)
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.attempt == 2
    manifest = json.loads(b"".join(artifacts.open_member(ti.artifacts_dir, "manifest.json")))
    starts = [a["resumed_from"] for a in manifest["attempts"]]
    assert starts == [None, in_bucket], starts  # resumed from the uploaded checkpoint
    assert not (tmp_path / "host-a").exists()
    assert read_manifest(artifacts.store(), ti.artifacts_dir).complete

    lora = run_create(
        kind="lora",
        parent=Run.objects.get(pk=ti.pk),
        selection={"datasets": ["demo"], "diagnoses": ["MEL", "NV"]},
        config={**QUICK, "steps": 4, "checkpoint_every": 2},
    )
    done = finished(lora.job_id, workers)
    assert done.state == JobState.SUCCEEDED, done.error
    lora.refresh_from_db()

    batch = batch_create(
        model_run=lora,
        target=8,
        diagnoses=["MEL", "NV"],
        fst_distribution={5: 0.5, 6: 0.5},
        steps=2,
        overgeneration=2,
        shard_size=4,
        device_batch=4,
    )
    wait_for(
        lambda: (
            type(batch).objects.get(pk=batch.pk).state
            in (BatchState.FINISHED, BatchState.FAILED, BatchState.CANCELLED)
        ),
        timeout=400,
        what="the batch",
        workers=workers,
    )
    batch.refresh_from_db()
    assert batch.state == BatchState.FINISHED, batch.error
    assert Sample.objects.filter(batch=batch, verdict="accepted").count() == 8
    assert read_manifest(artifacts.store(), batch.artifacts_dir).files.keys() >= {
        "reference/identity.json"
    }

    raters = [make_user("dermatologist", username=f"derm-s3-{i}") for i in (1, 2, 3)]
    lead = make_user("lead", username="lead-s3")
    study = study_create(batch=batch, raters=raters, sample_size=8, control_ratio=0.25, seed=5)
    done = finished(study.job_id, workers)
    assert done.state == JobState.SUCCEEDED, done.error
    study = Study.objects.get(pk=study.pk)
    for rater in raters:
        while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
            rating_submit(token=current.token, rater=rater, score=7, seconds=3.0)
    study_close(study=study, user=lead)
    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead)
    done = finished(release.export_job_id, workers)
    assert done.state == JobState.SUCCEEDED, done.error
    release = Release.objects.get(pk=release.pk)
    assert release.export_path.startswith("releases/") and release.export_path.endswith(".zip")

    # The web host: the download streams from the bucket through the permission-checked view.
    client.force_login(lead)
    response = client.get(reverse("review:download", args=[release.pk]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    pngs = [n for n in archive.namelist() if n.endswith(".png")]
    assert len(pngs) == release.image_count == 8
    # A run's page lists its artifacts from the manifest; a file comes from the bucket.
    client.force_login(make_user("engineer", username="eng-s3"))
    page = client.get(reverse("training:run", args=[lora.pk])).content.decode()
    assert "pytorch_lora_weights.safetensors" in page
    weights = client.get(
        reverse("training:artifact", args=[lora.pk, "pytorch_lora_weights.safetensors"])
    )
    body = b"".join(weights.streaming_content)
    stored = read_manifest(artifacts.store(), lora.artifacts_dir).files
    assert len(body) == stored["pytorch_lora_weights.safetensors"].size
    # The web host fetched what its pages show, never a checkpoint or the weights.
    web = tmp_path / "web-host"
    assert not list(web.rglob("checkpoints")) and not list(web.rglob("*.safetensors"))
    # The second host downloaded the first's checkpoint into a folder of its own.
    assert (tmp_path / "host-b" / "artifacts" / ti.artifacts_dir / "checkpoints").is_dir()
