"""Celery entry points: take primary keys, call one service."""

from __future__ import annotations

from celery import shared_task

from jobs import runner


@shared_task(name="jobs.run", acks_late=True, reject_on_worker_lost=True)
def run_job(*, job_id: int) -> str:
    return runner.execute_job(job_id=job_id)
