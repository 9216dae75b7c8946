"""Review job kinds: preparing a study and exporting a release (both cpu). Each parses its
job's params and calls one service; the study or release owns the job, and its page is where
a user cancels and resumes."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from jobs.models import Job
from jobs.registry import JobContext, Owner, register
from review.selectors import release_of_export_job, study_of_job
from review.services.export import release_export_write
from review.services.release import release_export_cancel, release_export_resume
from review.services.study import (
    study_preparation_cancel,
    study_preparation_failed,
    study_preparation_resume,
    study_prepare_job,
)


def _study_owner(job: Job) -> Owner | None:
    study = study_of_job(job=job)
    if study is None:
        return None
    return Owner(
        label=f"study {study.pk}",
        url=reverse("review:study", args=[study.pk]),
        cancel=lambda user: study_preparation_cancel(study=study, user=user),
        resume=lambda user: study_preparation_resume(study=study, user=user),
    )


def _prepare_failed(job: Job, error: str) -> None:
    study_preparation_failed(job_id=job.pk, error=error)


@register(
    "review.prepare",
    queue="cpu",
    label="Review: sample and blind",
    owner=_study_owner,
    on_failed=_prepare_failed,
)
def prepare_study(job: Job, progress: JobContext) -> dict[str, Any]:
    return study_prepare_job(study_id=job.params["study_id"], progress=progress)


def _release_owner(job: Job) -> Owner | None:
    release = release_of_export_job(job=job)
    if release is None:
        return None
    return Owner(
        label=f"release {release.pk}",
        url=reverse("review:release", args=[release.pk]),
        cancel=lambda user: release_export_cancel(release=release, user=user),
        resume=lambda user: release_export_resume(release=release, user=user),
    )


@register("review.export", queue="cpu", label="Export a release", owner=_release_owner)
def export_release(job: Job, progress: JobContext) -> dict[str, Any]:
    return release_export_write(
        release_id=job.params["release_id"], attempt=job.attempt, progress=progress
    )
