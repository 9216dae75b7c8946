"""Job kinds of the jobs app: each parses its job's params and calls one service."""

from __future__ import annotations

from typing import Any

from jobs import work
from jobs.models import Job
from jobs.registry import JobContext, register


@register("worker_check", queue="cpu", label="Worker check")
def worker_check(job: Job, progress: JobContext) -> dict[str, Any]:
    """Prove a worker can reach the database and media storage (engineers launch it on a
    queue to check a newly added worker end to end)."""
    params = work.worker_check_params(**job.params)
    return work.worker_check_run(job=job, progress=progress, **params)
