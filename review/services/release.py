"""Decisions on a judged batch: approve it as a release (and export it), or reject it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from fairskin.provenance import new_identity
from generation.models import Batch, Sample, Verdict
from jobs import artifacts
from jobs.services import job_cancel, job_create, job_resume
from review.models import BatchRejection, Release, Study, StudyState
from review.services.errors import ReleaseRefused


def release_file_name(sample: Sample) -> str:
    """Where an image sits in an export: class folders, as torchvision's ImageFolder and
    Hugging Face's imagefolder both read them."""
    return f"train/{sample.diagnosis}/{sample.image.source_id}.png"


def release_manifest(*, batch: Batch, study: Study) -> dict[str, Any]:
    samples = (
        Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED)
        .select_related("image")
        .order_by("diagnosis", "fst", "index")
    )
    lineage = batch.model_run.lineage()
    return {
        "format": "fairskin-release/1",
        "batch": batch.pk,
        "study": study.pk,
        "model_runs": [
            {
                "id": r.pk,
                "kind": r.kind,
                "base_model": r.base_model,
                "selection_hash": r.selection_hash,
            }
            for r in lineage
        ],
        "generation": {
            "scheduler": batch.scheduler,
            "steps": batch.steps,
            "guidance": batch.guidance,
            "negative_prompt": batch.negative_prompt,
            "size": batch.size,
            "seed": batch.seed,
        }
        # Conditioning beyond the prompt, only where the batch used it (older manifests and
        # text-to-image batches read as before).
        | ({"label_scale": batch.label_scale} if batch.label_scale else {})
        | (
            {
                "reference_strength": batch.reference_strength,
                "reference_images": batch.reference["image_ids"],
            }
            if batch.reference
            else {}
        ),
        # What the pixels (and so the sha256s below) depend on beyond the settings above.
        "reproducibility": batch.reproducibility,
        "criteria_version": study.criteria.get("version"),
        "images": [
            {
                "file_name": release_file_name(s),
                "sha256": s.image.sha256,
                "diagnosis": s.diagnosis,
                "fst": s.fst,
                "seed": s.seed,
                "prompt": s.prompt,
                "sample_id": s.pk,
                "image_id": s.image_id,
            }
            | ({"reference_image": s.reference_image_id} if s.reference_image_id else {})
            | ({"class_label": s.class_label} if s.class_label is not None else {})
            for s in samples
        ],
    }


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def release_approve(*, study: Study, user: Any, note: str = "", enqueue: bool = True) -> Release:
    """Release the batch a closed study with a passed gate judged. Refused otherwise."""
    with transaction.atomic():
        study = Study.objects.select_for_update().select_related("batch").get(pk=study.pk)
        batch = Batch.objects.select_for_update().get(pk=study.batch_id)
        if study.state != StudyState.CLOSED:
            raise ReleaseRefused("a batch is approved only through a closed study")
        if not study.gate.get("gate", {}).get("passed"):
            raise ReleaseRefused(
                f"study {study.pk}'s gate did not pass; the batch cannot be "
                "approved through it (reject it, or run another study)"
            )
        if Release.objects.filter(batch=batch).exists():
            raise ReleaseRefused(f"batch {batch.pk} is already released")
        if BatchRejection.objects.filter(batch=batch).exists():
            raise ReleaseRefused(f"batch {batch.pk} was rejected")
        manifest = release_manifest(batch=batch, study=study)
        release = Release.objects.create(
            study=study,
            batch=batch,
            approved_by=user,
            note=note,
            manifest=manifest,
            manifest_sha256=_sha256_json(manifest),
            gate=study.gate,
            criteria_version=study.criteria.get("version", 1),
            image_count=len(manifest["images"]),
        )
        _release_identity_assign(release)
        job = job_create(
            kind="review.export",
            queue="cpu",
            params={"release_id": release.pk},
            title=f"Export release {release.pk}",
            launched_by=user,
            enqueue=enqueue,
        )
        release.export_job = job
        release.save(update_fields=["export_job"])
    return release


def _release_identity_assign(release: Release) -> None:
    """A new release's identity, naming its export folder (release-<id>-<token>): one no
    earlier release left behind, so a re-used id never publishes into another's folder. Set
    once, in the transaction that creates the release (a release is otherwise immutable)."""
    root = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "releases"
    identity = new_identity("release", release.pk)
    while (root / identity).exists() or (root / f"{identity}.zip").exists():
        identity = new_identity("release", release.pk)
    Release.objects.filter(pk=release.pk).update(identity=identity)
    release.identity = identity


def release_export_cancel(*, release: Release, user: Any = None) -> Release:
    if release.export_job is None or release.export_job.is_terminal:
        raise ReleaseRefused(f"release {release.pk}'s export is not running")
    job_cancel(job=release.export_job, by=user)
    return release


def release_export_resume(*, release: Release, user: Any = None) -> Release:
    """Write a release's export again after it failed or was cancelled."""
    job = release.export_job
    if job is None or job.state not in ("failed", "cancelled"):
        raise ReleaseRefused(f"release {release.pk}'s export has not failed; nothing to resume")
    job_resume(job=job, by=user)
    return release


def release_reject(
    *, batch: Batch, user: Any, reason: str, study: Study | None = None
) -> BatchRejection:
    reason = (reason or "").strip()
    if not reason:
        raise ReleaseRefused("give a reason for rejecting the batch")
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch.pk)
        if Release.objects.filter(batch=batch).exists():
            raise ReleaseRefused(f"batch {batch.pk} is already released")
        if BatchRejection.objects.filter(batch=batch).exists():
            raise ReleaseRefused(f"batch {batch.pk} was already rejected")
        if study is not None and study.batch_id != batch.pk:
            raise ReleaseRefused("that study is of another batch")
        return BatchRejection.objects.create(
            batch=batch, study=study, reason=reason, rejected_by=user
        )


def releases_artifacts_upload(*, dry_run: bool = False) -> Iterator[tuple[str, bool]]:
    """Upload every exported release archive into the artifact store and record its key
    (`manage.py upload_artifacts`). The release row is otherwise immutable; its export
    location is not part of what was approved."""
    for release in Release.objects.exclude(export_path="").order_by("pk"):
        key, message, stored = artifacts.upload_reference(
            release.export_path, "releases", dry_run=dry_run
        )
        if stored and not dry_run and key != release.export_path:
            Release.objects.filter(pk=release.pk).update(export_path=key)
        yield f"release {release.pk}: {message}", stored
