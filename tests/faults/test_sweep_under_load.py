"""Fault: a GPU worker is SIGKILLed mid-job while the CPU queue holds about 90 s of work.

The compose shape: a CPU worker, GPU workers and a separate `celery beat`. When the sweep was
a task on the `cpu` queue it waited behind the CPU jobs (recovery took 92 s, and sweeps expired
unrun). Now it is a thread of the beat process: the dead worker's job is re-queued within a
lease plus a sweep interval, whatever the queues hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job, JobState
from jobs.services import job_create
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_S, SWEEP_S = 3, 1
FAST = {"FAIRSKIN_JOB_LEASE_SECONDS": str(LEASE_S), "FAIRSKIN_SWEEP_SECONDS": str(SWEEP_S)}
CPU_JOBS, CPU_STEPS = 30, 3  # 30 jobs of 3 one-second steps: 90 s of queued CPU work


def start_beat(tmp_path, settings) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        **FAST,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    log = open(tmp_path / "beat.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fairskin_site",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(tmp_path / "beat-schedule"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_dead_gpu_worker_is_recovered_in_a_lease_and_a_sweep_with_the_cpu_queue_full(
    start_worker,
    tmp_path,
    settings,
):
    cpu = start_worker(queues="cpu", **FAST)
    for n in range(CPU_JOBS):
        job_create(
            kind="worker_check",
            queue="cpu",
            title=f"cpu load {n}",
            params={"steps": CPU_STEPS, "pause_s": 1.0},
        )
    doomed = start_worker(queues="gpu", **FAST)
    gpu_job = job_create(
        kind="worker_check", queue="gpu", title="long gpu job", params={"steps": 40, "pause_s": 0.5}
    )
    beat = start_beat(tmp_path, settings)
    try:

        def job() -> Job:
            return Job.objects.get(pk=gpu_job.pk)

        wait_for(
            lambda: job().progress_done >= 3,
            timeout=120,
            what="the gpu job to run",
            workers=[doomed],
        )
        # A spare gpu worker, ready before the kill so its start-up is not counted.
        spare = start_worker(queues="gpu", **FAST)
        wait_for(
            lambda: " ready." in spare.output(),
            timeout=60,
            what="the spare worker",
            workers=[spare],
        )
        wait_for(
            lambda: Job.objects.filter(queue="cpu", state=JobState.RUNNING).exists(),
            timeout=60,
            what="the cpu worker to be busy",
            workers=[cpu],
        )
        doomed.kill()
        killed_at = timezone.now()
        requeue = wait_for(
            lambda: job().log_entries.filter(message="lease expired; re-queued").first(),
            timeout=60,
            what="the sweep to re-queue the dead worker's job",
            workers=[cpu, spare],
        )
        cpu_backlog = Job.objects.filter(queue="cpu", state=JobState.QUEUED).count()
        second = wait_for(
            lambda: job().attempts.filter(number=2).first(),
            timeout=60,
            what="attempt 2 on the spare gpu worker",
            workers=[spare],
        )
        finished = wait_for(
            lambda: job().is_terminal and job(),
            timeout=120,
            what="the gpu job to finish",
            workers=[spare],
        )
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=15)
    requeued_s = (requeue.created_at - killed_at).total_seconds()
    claimed_s = (second.started_at - killed_at).total_seconds()
    assert finished.state == JobState.SUCCEEDED, finished.error
    assert cpu_backlog >= 10, "the cpu queue was not saturated when the job was recovered"
    assert requeued_s <= LEASE_S + SWEEP_S + 5, requeued_s
    print(
        f"\nkilled with {cpu_backlog} cpu jobs still queued; re-queued after {requeued_s:.1f}s,"
        f" attempt 2 started after {claimed_s:.1f}s (lease {LEASE_S}s, sweep {SWEEP_S}s)"
    )
