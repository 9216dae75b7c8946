"""Issue 15: a release's DATASHEET states its lineage (every run, its job attempts and where
each training attempt started, resumes included) from the runs' job attempts and manifests;
a release is exported into a folder of its own."""

import json
from pathlib import Path

import pytest
from django.utils import timezone

from jobs.models import JobAttempt
from jobs.runner import execute_job
from review.models import Study
from review.services.export import release_folder
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve
from tests.factories import RunFactory
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db


def trained(run, folder: Path, attempts: list[dict], outcomes: list[str]) -> None:
    """A run's folder and job as the worker leaves them: manifest and job attempts."""
    folder.mkdir(parents=True)
    manifest = {"identity": {"identity": run.identity}, "steps": 8, "attempts": attempts}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run.artifacts_dir = str(folder)
    run.save(update_fields=["artifacts_dir"])
    for number, outcome in enumerate(outcomes, start=1):
        JobAttempt.objects.create(
            job=run.job,
            number=number,
            worker="w",
            started_at=timezone.now(),
            finished_at=timezone.now(),
            outcome=outcome,
        )


def test_the_datasheet_states_the_lineage_with_a_resume(batch, raters, lead, tmp_path):
    lora = batch.model_run
    ti = RunFactory(kind="textual_inversion", identity="run-90-aaaaaaaaaaaa")
    lora.parent, lora.identity = ti, "run-91-bbbbbbbbbbbb"
    lora.save(update_fields=["parent", "identity"])
    trained(ti, tmp_path / ti.identity, [{"attempt": 1, "resumed_from": None}], ["succeeded"])
    trained(
        lora,
        tmp_path / lora.identity,
        [{"attempt": 1, "resumed_from": None}, {"attempt": 2, "resumed_from": 6}],
        ["cancelled", "succeeded"],
    )
    study = open_study(batch, raters)
    for rater in raters:
        while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
            rating_submit(token=current.token, rater=rater, score=7, seconds=3.0)
    study_close(study=study, user=lead)
    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    assert release.identity.startswith(f"release-{release.pk}-")
    assert execute_job(job_id=release.export_job_id) == "succeeded"
    folder = release_folder(release)
    assert folder.name == release.identity and folder.is_dir()

    sheet = (folder / "DATASHEET.md").read_text()
    lineage = sheet.split("## Lineage (oldest run first)")[1].split("\n## ")[0]
    ti_line, lora_line = [line for line in lineage.splitlines() if line.startswith("- Run")]
    assert ti_line.startswith(f"- Run {ti.pk} (Textual inversion, folder run-90-aaaaaaaaaaaa)")
    assert "job attempts: 1 succeeded; training start 1: fresh from step 0" in ti_line
    assert lora_line.startswith(f"- Run {lora.pk} (LoRA, folder run-91-bbbbbbbbbbbb)")
    assert "job attempts: 1 cancelled, 2 succeeded" in lora_line
    assert "training start 2: resumed from its checkpoint at step 6 (8 steps in all)" in lora_line


def test_a_manifest_of_another_run_is_named_not_believed(batch, raters, lead, tmp_path):
    from review.services.export import _lineage_lines

    run = batch.model_run
    run.identity = "run-5-cccccccccccc"
    run.save(update_fields=["identity"])
    trained(run, tmp_path / "x", [{"attempt": 1, "resumed_from": 6}], ["succeeded"])
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    manifest["identity"]["identity"] = "run-5-dddddddddddd"
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    (line,) = [x for x in _lineage_lines([run]) if x.startswith("- Run")]
    assert "manifest belongs to run-5-dddddddddddd, not to this run" in line
    assert "resumed" not in line
