"""Real Celery worker processes on Redis and the PostgreSQL test database."""

import pytest

from jobs import services
from jobs.models import Job, JobState
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def state_of(job_id):
    return Job.objects.get(pk=job_id)


def test_worker_runs_a_job_from_queued_to_succeeded(start_worker, engineer):
    worker = start_worker()
    job = services.job_create(
        kind="worker_check", params={"steps": 5, "pause_s": 0.05}, launched_by=engineer
    )
    assert job.state == JobState.QUEUED
    seen = set()

    def finished():
        current = state_of(job.pk)
        seen.add(current.state)
        return current.is_terminal and current

    done = wait_for(finished, timeout=60, what="the job to finish", workers=[worker])
    assert done.state == JobState.SUCCEEDED, done.error
    assert JobState.RUNNING in seen or done.attempts.count() == 1
    assert (done.progress_done, done.progress_total, done.attempt) == (5, 5, 1)
    assert done.celery_task_id
    assert done.result["queue"] == "cpu"


def test_job_cancelled_midway_stops_before_the_end(start_worker, engineer):
    worker = start_worker()
    job = services.job_create(
        kind="worker_check", params={"steps": 400, "pause_s": 0.05}, launched_by=engineer
    )
    wait_for(
        lambda: state_of(job.pk).progress_done >= 3,
        timeout=60,
        what="the job to make progress",
        workers=[worker],
    )
    services.job_cancel(job=state_of(job.pk), by=engineer)
    done = wait_for(
        lambda: state_of(job.pk).is_terminal and state_of(job.pk),
        timeout=30,
        what="the cancellation",
        workers=[worker],
    )
    assert done.state == JobState.CANCELLED
    assert 3 <= done.progress_done < 400
    assert done.attempts.get().outcome == "cancelled"


def test_killed_worker_job_is_swept_back_and_finished_by_a_new_attempt(start_worker, engineer):
    """The first worker dies mid-job; the lease sweep (beat) re-queues the job at once
    instead of waiting for the broker's visibility timeout, and a second worker finishes it."""
    fast_lease = {"FAIRSKIN_JOB_LEASE_SECONDS": "3", "FAIRSKIN_SWEEP_SECONDS": "1"}
    first = start_worker(**fast_lease)
    job = services.job_create(
        kind="worker_check", params={"steps": 60, "pause_s": 0.1}, launched_by=engineer
    )
    wait_for(
        lambda: state_of(job.pk).progress_done >= 3,
        timeout=60,
        what="progress on the first worker",
        workers=[first],
    )
    first.kill()
    second = start_worker(WITH_BEAT="1", **fast_lease)
    done = wait_for(
        lambda: state_of(job.pk).is_terminal and state_of(job.pk),
        timeout=90,
        what="the second attempt",
        workers=[first, second],
    )
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.attempt == 2
    outcomes = list(done.attempts.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["lost", "succeeded"]
    assert done.log_entries.filter(message__contains="lease expired; re-queued").exists()


def test_gpu_jobs_reach_only_workers_of_the_gpu_queue(start_worker, engineer):
    cpu_only = start_worker(queues="cpu")
    gpu_job = services.job_create(
        kind="worker_check", queue="gpu", params={"steps": 1, "pause_s": 0}, launched_by=engineer
    )
    cpu_job = services.job_create(
        kind="worker_check", queue="cpu", params={"steps": 1, "pause_s": 0}, launched_by=engineer
    )
    wait_for(
        lambda: state_of(cpu_job.pk).state == JobState.SUCCEEDED,
        timeout=60,
        what="the cpu job",
        workers=[cpu_only],
    )
    assert state_of(gpu_job.pk).state == JobState.QUEUED  # the CPU worker never saw it
    gpu_worker = start_worker(queues="gpu")
    done = wait_for(
        lambda: state_of(gpu_job.pk).is_terminal and state_of(gpu_job.pk),
        timeout=60,
        what="the gpu job",
        workers=[gpu_worker],
    )
    assert done.state == JobState.SUCCEEDED
    assert done.result["queue"] == "gpu"
