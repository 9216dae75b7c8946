"""A training run on a real Celery worker (gpu queue): cancelled mid-way, resumed from its
checkpoint, finished."""

import pytest
from django.core.management import call_command

from jobs.models import Job, JobState
from jobs.services import job_cancel, job_resume
from tests.conftest import wait_for
from training.services import run_create

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_is_cancelled_then_resumes_from_its_checkpoint_on_a_worker(start_worker, capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "2")
    worker = start_worker(queues="gpu")
    run = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"]},
        config={
            "steps": 40,
            "checkpoint_every": 5,
            "validation_every": 1000,
            "validation_inference_steps": 1,
            "grad_accumulation": 1,
        },
    )

    def job():
        return Job.objects.get(pk=run.job_id)

    wait_for(
        lambda: job().progress_done >= 7, timeout=240, what="training progress", workers=[worker]
    )
    job_cancel(job=job())
    cancelled = wait_for(
        lambda: job().is_terminal and job(), timeout=60, what="the cancellation", workers=[worker]
    )
    assert cancelled.state == JobState.CANCELLED
    stopped_at = cancelled.progress_done
    assert 7 <= stopped_at < 40
    job_resume(job=cancelled)
    done = wait_for(
        lambda: job().is_terminal and job(), timeout=240, what="the resumed run", workers=[worker]
    )
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.attempt == 2
    assert done.result["resumed_from"] == stopped_at  # the checkpoint written on cancel
    run.refresh_from_db()
    assert run.final_loss is not None and run.tokens
