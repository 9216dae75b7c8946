"""Issue 15: a run's folder is its own. A database reset that kept the artifacts re-uses run ids;
the new run never shows, resumes from or writes into the folder an earlier run left."""

import csv
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from fairskin.provenance import read_identity
from jobs.models import Job
from jobs.runner import execute_job
from training.models import Run
from training.services import run_create

pytestmark = pytest.mark.django_db
FAST = {
    "steps": 4,
    "checkpoint_every": 2,
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
}


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()


def leave_an_earlier_runs_folder(name: str) -> Path:
    """What a run of an earlier database left: a checkpoint at step 6 and a loss log."""
    folder = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "runs" / name
    (folder / "checkpoints" / "step-000006").mkdir(parents=True)
    (folder / "loss.csv").write_text("step,loss,grad_norm\n1,0.9,1\n6,0.5,1\n")
    return folder


def test_a_run_never_uses_the_folder_an_earlier_run_with_its_id_left(demo):
    first = run_create(
        kind="textual_inversion", selection={"datasets": ["demo"]}, config=FAST, enqueue=False
    )
    # The next run will get the next id; an earlier database's run with that id left its
    # folder under the old name, and one under the new naming too.
    next_id = first.pk + 1
    old = leave_an_earlier_runs_folder(f"run-{next_id}")
    run = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"]},
        base_model="tiny",
        config=FAST,
        enqueue=False,
    )
    assert run.pk == next_id
    assert run.identity.startswith(f"run-{run.pk}-") and run.identity != old.name
    assert Path(run.folder).name == run.identity
    assert not Path(run.folder).exists()  # nothing to show while queued

    assert execute_job(job_id=run.job_id) == "succeeded", Job.objects.get(pk=run.job_id).error
    job = Job.objects.get(pk=run.job_id)
    assert job.attempt == 1 and job.result["resumed_from"] is None  # trained all 4 steps
    with (Path(run.folder) / "loss.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "loss.csv"]  # untouched
    record = read_identity(Path(run.folder) / "checkpoints" / "step-000004")
    assert record["identity"] == run.identity
    assert record["selection_hash"] == run.selection_hash and record["parents"] == []
    manifest = json.loads((Path(run.folder) / "manifest.json").read_text())
    assert manifest["attempts"] == [{"attempt": 1, "resumed_from": None}]


def test_a_checkpoint_of_another_run_in_a_runs_folder_is_refused(demo):
    run = run_create(
        kind="textual_inversion", selection={"datasets": ["demo"]}, config=FAST, enqueue=False
    )
    stray = Path(run.folder) / "checkpoints" / "step-000002"
    stray.mkdir(parents=True)
    (stray / "identity.json").write_text(json.dumps({"identity": f"run-{run.pk}-000000000000"}))
    execute_job(job_id=run.job_id)
    job = Job.objects.get(pk=run.job_id)
    assert "belongs to something else" in job.error and "it was not used" in job.error
    assert Run.objects.get(pk=run.pk).final_loss is None
