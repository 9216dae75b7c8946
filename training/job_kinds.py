"""Training job kinds: each parses its job's params and calls one service (training.work)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from jobs.models import Job
from jobs.registry import JobContext, Owner, register
from training import services, work
from training.selectors import run_of_job


def _run_owner(job: Job) -> Owner | None:
    run = run_of_job(job=job)
    if run is None:
        return None
    return Owner(
        label=f"run {run.pk}",
        url=reverse("training:run", args=[run.pk]),
        cancel=lambda user: services.run_cancel(run=run, user=user),
        resume=lambda user: services.run_resume(run=run, user=user),
    )


@register("training.run", queue="gpu", label="Training run", owner=_run_owner)
def run_training(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.run_train(run_id=job.params["run_id"], progress=progress)


@register(
    "training.import_external", queue="cpu", label="Import external artifacts", owner=_run_owner
)
def import_external_artifacts(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.run_artifacts_import(
        run_id=job.params["run_id"], source=job.params["source"], progress=progress
    )
