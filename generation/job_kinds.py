"""Generation job kinds: each parses its job's params and calls one service
(generation.work). A batch's prepare job hands on to shard jobs and then to one report job,
all owned by the batch (its page is where a user cancels and resumes)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from fairskin.generation.plan import CandidateRange
from generation import services, work
from generation.selectors import batch_of_job
from jobs.models import Job
from jobs.registry import JobContext, Owner, register


def _batch_owner(job: Job) -> Owner | None:
    batch = batch_of_job(job=job)
    if batch is None:
        return None
    return Owner(
        label=f"batch {batch.pk}",
        url=reverse("generation:batch", args=[batch.pk]),
        cancel=lambda user: services.batch_cancel(batch=batch, user=user),
        resume=lambda user: services.batch_resume(batch=batch, user=user),
    )


def _prepare_failed(job: Job, error: str) -> None:
    services.batch_preparation_failed(job_id=job.pk, error=error)


@register(
    "generation.prepare",
    queue="gpu",
    label="Generation: reference features",
    owner=_batch_owner,
    on_failed=_prepare_failed,
)
def prepare_batch(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.batch_prepare(
        batch_id=job.params["batch_id"], attempt=job.attempt, progress=progress
    )


@register("generation.shard", queue="gpu", label="Generation: shard", owner=_batch_owner)
def generate_shard(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.batch_shard_generate(
        batch_id=job.params["batch_id"],
        shard_job_id=job.pk,
        ranges=[CandidateRange(*r) for r in job.params["ranges"]],
        progress=progress,
    )


@register("generation.report", queue="cpu", label="Generation: batch metrics", owner=_batch_owner)
def report_batch(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.batch_report_write(batch_id=job.params["batch_id"], progress=progress)
