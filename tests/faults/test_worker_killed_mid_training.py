"""Fault: the Celery worker running a training run is SIGKILLed mid-run.

A textual-inversion run on the demo dataset checkpoints every 5 steps. Its worker is killed
(the whole process group, no chance to clean up) once the run has passed step 12; a second
worker with beat and a fast lease then sweeps the job back and finishes it. The second attempt
must resume from the last checkpoint the first one wrote (not from step 0) and finish the run.
"""

import time
from pathlib import Path

import pytest
from django.core.management import call_command

from jobs.models import Job, JobState
from tests.conftest import wait_for
from training.models import Run
from training.services import run_create

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The first worker needs the short lease too: a lease is set by the worker that claims the job.
FAST_LEASE = {"FAIRSKIN_JOB_LEASE_SECONDS": "3", "FAIRSKIN_SWEEP_SECONDS": "1"}
STEPS, EVERY = 40, 5


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The complete checkpoints on disk (a checkpoint is renamed into place whole)."""
    return sorted(
        int(p.name.removeprefix("step-")) for p in (run_dir / "checkpoints").glob("step-??????")
    )


def test_worker_killed_mid_training_resumes_from_its_last_checkpoint(start_worker, capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "2")
    capsys.readouterr()
    first = start_worker(queues="gpu", **FAST_LEASE)
    run = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"]},
        config={
            "steps": STEPS,
            "checkpoint_every": EVERY,
            "validation_every": 1000,
            "validation_inference_steps": 1,
            "grad_accumulation": 1,
        },
    )
    run_dir = Path(run.folder)

    def job() -> Job:
        return Job.objects.get(pk=run.job_id)

    wait_for(
        lambda: job().progress_done >= 12,
        timeout=120,
        what="training past step 12",
        workers=[first],
    )
    first.kill()
    killed_at = job().progress_done
    on_disk = checkpoint_steps(run_dir)
    assert killed_at < STEPS, "the run finished before the worker could be killed"
    assert on_disk and on_disk[-1] >= 10, on_disk
    last_checkpoint = on_disk[-1]
    assert job().state == JobState.RUNNING and job().attempt == 1  # nobody noticed yet

    started = time.monotonic()
    second = start_worker(queues="gpu,cpu", WITH_BEAT="1", **FAST_LEASE)
    done = wait_for(
        lambda: job().is_terminal and job(),
        timeout=180,
        what="the second attempt",
        workers=[first, second],
    )
    recovery_s = time.monotonic() - started
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.attempt == 2
    outcomes = list(done.attempts.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["lost", "succeeded"]
    assert done.log_entries.filter(message__contains="lease expired; re-queued").exists()
    # Resumed from the newest checkpoint the killed attempt left, not from step 0.
    resumed = done.result["resumed_from"]
    assert resumed == last_checkpoint
    assert resumed > 0 and resumed % EVERY == 0
    assert done.log_entries.filter(
        attempt=2, message=f"resumed from the checkpoint at step {resumed}"
    ).exists()
    assert (done.progress_done, done.progress_total) == (STEPS, STEPS)
    # The loss log was cut back to the checkpoint and continued from it: the steps the killed
    # attempt did after its last checkpoint were redone once, not appended twice.
    rows = [
        int(line.split(",")[0])
        for line in (run_dir / "loss.csv").read_text().splitlines()
        if line[:1].isdigit()
    ]
    assert rows == list(range(1, STEPS + 1))
    assert checkpoint_steps(run_dir)[-1] == STEPS
    run = Run.objects.get(pk=run.pk)
    assert run.final_loss is not None and run.tokens
    print(
        f"\nkilled at step {killed_at} (checkpoint {last_checkpoint} on disk); "
        f"attempt 2 resumed from {resumed} and finished in {recovery_s:.1f}s"
    )
