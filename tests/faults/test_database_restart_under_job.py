"""Fault: PostgreSQL restarts under a running job.

Before, the attempt read only "lost: lease expired" and the real OperationalError was in the
worker's log alone. Now the worker waits the outage out, records the error on the attempt
("interrupted"), hands the job back to the queue, and the next attempt finishes it.

Everything runs on a private cluster (initdb on a free port) that the test restarts; the
machine's PostgreSQL is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import ROOT, WorkerProcess, _purge_broker, wait_for
from tests.faults.processes import PrivatePostgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DB = "fairskin_job_faults"


def fetch(url: str, sql: str, *args):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_job_interrupted_by_a_postgres_restart_records_the_error_and_finishes(
    tmp_path,
    settings,
):
    pg = PrivatePostgres()
    workers: list[WorkerProcess] = []
    try:
        pg.init()
        pg.start()
        pg.create_database(DB)
        url = pg.url(DB)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MEDIA_ROOT": str(tmp_path / "media"),
            "PYTHONUNBUFFERED": "1",
            "FAIRSKIN_JOB_LEASE_SECONDS": "5",
            "FAIRSKIN_SWEEP_SECONDS": "1",
            "DJANGO_SETTINGS_MODULE": "fairskin_site.settings_test",
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
        )
        _purge_broker()
        workers.append(
            WorkerProcess({**env, "WITH_BEAT": "1"}, tmp_path / "worker.log", queues="cpu")
        )
        created = subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                "from jobs.services import job_create; print(job_create(kind='worker_check', "
                "queue='cpu', params={'steps': 30, 'pause_s': 0.3}).pk)",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        job_id = int(created.stdout.strip().splitlines()[-1])

        def job() -> tuple:
            return fetch(
                url, "SELECT state, attempt, progress_done FROM jobs_job WHERE id=%s", job_id
            )[0]

        wait_for(lambda: job()[2] >= 5, timeout=120, what="the job to run", workers=workers)
        pg.restart("fast")
        state = wait_for(
            lambda: job()[0] in ("succeeded", "failed") and job(),
            timeout=180,
            what="the job to finish after the restart",
            workers=workers,
        )
        attempts = fetch(
            url,
            "SELECT number, outcome, error FROM jobs_jobattempt WHERE job_id=%s ORDER BY number",
            job_id,
        )
        assert state[0] == "succeeded" and state[1] == 2, (state, attempts)
        first = attempts[0]
        assert first[1] == "interrupted", attempts
        assert "OperationalError" in first[2] or "InterfaceError" in first[2], attempts
        assert "lease expired" not in first[2]
        print(f"\nattempt 1: {first[1]} ({first[2][:120]}); attempt 2: {attempts[1][1]}")
    finally:
        for worker in workers:
            worker.stop()
        pg.remove()
