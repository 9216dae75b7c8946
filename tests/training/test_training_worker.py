"""A training run on a real Celery worker: cancelled mid-way, resumed from its checkpoint,
finished. The run trains on 2 data-parallel processes (issue 19; gloo ranks on this CPU
machine), so the worker's own path is the launcher's: the worker records its devices, takes
the run from gpu-x2, cancel ends every rank, resume restarts every rank from the checkpoint.
(The one-process worker path is killed and resumed in
tests/faults/test_worker_killed_mid_training.py.)"""

from pathlib import Path

import pytest

from jobs.models import Job, JobLogEntry, JobState, WorkerHost
from jobs.services import job_cancel, job_resume
from tests.conftest import wait_for
from tests.training.test_data_parallel_runs import CORES, FAST, _ranks_alive, seed
from training.services import run_create

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_worker_trains_on_two_processes_is_cancelled_and_resumes_every_rank(start_worker, capsys):
    if CORES < 2:
        pytest.skip("needs 2 cores")
    seed(capsys)
    worker = start_worker(queues="gpu,gpu-x2")
    host = wait_for(
        lambda: WorkerHost.objects.filter(queues__contains=["gpu-x2"]).first(),
        timeout=60,
        what="the worker to record its devices",
        workers=[worker],
    )
    assert host.devices == CORES and host.device_kind == "cpu"
    run = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"]},
        config={"steps": 40, "checkpoint_every": 5, "processes": 2, **FAST},
    )
    assert run.job.queue == "gpu-x2"

    def job():
        return Job.objects.get(pk=run.job_id)

    wait_for(lambda: job().progress_done >= 7, timeout=240, what="progress", workers=[worker])
    job_cancel(job=job())
    cancelled = wait_for(
        lambda: job().is_terminal and job(), timeout=120, what="the cancel", workers=[worker]
    )
    assert cancelled.state == JobState.CANCELLED
    assert not _ranks_alive(run)  # cancel ended every rank
    log = " ".join(JobLogEntry.objects.filter(job=run.job).values_list("message", flat=True))
    saved = [w for w in log.split("cancelled at step ")[1:]]
    assert saved, log
    stopped_at = int(saved[-1].split(";")[0])
    assert 7 <= stopped_at < 40

    job_resume(job=cancelled)
    done = wait_for(
        lambda: job().is_terminal and job(), timeout=240, what="the resume", workers=[worker]
    )
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.result["resumed_from"] == stopped_at
    losses = Path(run.folder, "loss.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in losses] == list(range(1, 41))
    assert not _ranks_alive(run)
