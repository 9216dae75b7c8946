"""Catalog job kinds: each parses its job's params and calls one service (catalog.work)."""

from __future__ import annotations

from typing import Any

from catalog import work
from jobs.models import Job
from jobs.registry import JobContext, register


@register("catalog.import", queue="cpu", label="Dataset import")
def import_upload(job: Job, progress: JobContext) -> dict[str, Any]:
    """Import an admin upload that was saved to storage; the upload is deleted afterwards."""
    p = job.params
    return work.dataset_upload_import(
        fmt=p["format"],
        metadata_path=p["metadata_path"],
        metadata_name=p["metadata_name"],
        images_path=p.get("images_path") or None,
        name=p["name"],
        mapping=p["mapping"],
        allowed_use=p.get("allowed_use") or None,
        licence=p.get("licence") or None,
        user=job.launched_by,
        progress=progress,
    )


@register("catalog.preprocess", queue="cpu", label="Preprocess images")
def preprocess_dataset(job: Job, progress: JobContext) -> dict[str, Any]:
    return work.dataset_preprocess(
        dataset_id=job.params["dataset_id"],
        hair_removal=bool(job.params.get("hair_removal")),
        force=bool(job.params.get("force")),
        progress=progress,
    )
