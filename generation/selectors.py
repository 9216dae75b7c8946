"""Reads for generation batches: the jobs working for a batch, for its live page."""

from __future__ import annotations

from django.db.models import Count

from generation.models import Batch
from jobs.models import Job, JobState

LIVE_JOBS_SHOWN = 8  # running shard/report jobs listed with their progress on the batch page


def batch_job_states(*, batch: Batch) -> dict[str, int]:
    """How many of the batch's shard and report jobs are in each state."""
    if batch.job_id is None:
        return {}
    # order_by(): an ordering column would join the GROUP BY and split the counts per job.
    counts = (Job.objects.filter(parent_id=batch.job_id).order_by().values("state")
              .annotate(n=Count("id")).values_list("state", "n"))
    return dict(counts)


def batch_running_jobs(*, batch: Batch, limit: int = LIVE_JOBS_SHOWN) -> list[Job]:
    """The batch's shard and report jobs now running, oldest first, at most ``limit``."""
    if batch.job_id is None:
        return []
    return list(Job.objects.filter(parent_id=batch.job_id, state=JobState.RUNNING)
                .order_by("id")[:limit])
