"""Catalog jobs: import (from an admin upload) and preprocessing."""

from __future__ import annotations

from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Q

from catalog import services
from catalog.models import Dataset, FstSource, Image
from fairskin.datasets.sources import ZipImages
from fairskin.imaging.decode import ImageDecodeError
from fairskin.imaging.preprocess import preprocess_image
from jobs.lease import LeaseLost
from jobs.models import Job
from jobs.registry import JobContext, register
from jobs.runner import is_transient


@register("catalog.import", queue="cpu", label="Dataset import")
def import_upload(job: Job, progress: JobContext) -> dict[str, Any]:
    """Import an admin upload that was saved to storage; the upload is deleted afterwards."""
    p = job.params
    if not default_storage.exists(p["metadata_path"]):
        raise FileNotFoundError("the uploaded files were removed after this import ended; "
                                "upload them again to import")
    images = None
    try:
        with default_storage.open(p["metadata_path"]) as fh:
            metadata = fh.read()
        if p.get("images_path"):
            images = ZipImages(default_storage.open(p["images_path"]))
        result = services.dataset_import(
            fmt=p["format"], metadata=metadata, metadata_name=p["metadata_name"],
            images=images, name=p["name"], mapping=p["mapping"],
            allowed_use=p.get("allowed_use") or None, licence=p.get("licence") or None,
            user=job.launched_by, progress=progress,
        )
    except Exception as exc:
        # A database outage re-queues the import, and an attempt that lost its lease hands
        # on to another: both need the upload.
        if not is_transient(exc) and not isinstance(exc, LeaseLost):
            _delete_upload(p)
        raise
    finally:
        if images is not None:
            images.close()
    _delete_upload(p)
    progress.log(f"{result.created} created, {result.updated} updated, "
                 f"{result.unchanged} unchanged, {result.missing_files} missing files")
    return {"dataset": result.dataset.name, "import_id": result.pk, "created": result.created,
            "updated": result.updated, "unchanged": result.unchanged,
            "missing_files": result.missing_files, "excluded": len(result.excluded)}


def _delete_upload(params: dict[str, Any]) -> None:
    for key in ("metadata_path", "images_path"):
        if params.get(key):
            default_storage.delete(params[key])


def images_to_preprocess(*, dataset: Dataset, force: bool):
    images = dataset.images.exclude(original="")
    if not force:
        images = images.filter(preprocessed="")
    return images.order_by("id")


def preprocess_one(image: Image, *, hair_removal: bool) -> None:
    with image.original.open("rb") as fh:
        data = fh.read()
    derivative = preprocess_image(data, name=image.file_name, hair_removal=hair_removal)
    stem = image.sha256 or f"image-{image.pk}"
    suffix = "-dullrazor" if hair_removal else ""
    image.preprocessed.save(f"{stem}{suffix}.png", ContentFile(derivative.png), save=False)
    image.thumbnail.save(f"{stem}{suffix}.jpg", ContentFile(derivative.thumbnail_jpeg),
                         save=False)
    image.ita, image.fst_ita, image.hair_removed = (
        derivative.ita, derivative.fst_ita, derivative.hair_removed)
    metadata = dict(image.metadata)
    metadata["ita_method"] = derivative.ita_method
    image.metadata = metadata
    if image.fst_low is None or image.fst_source == FstSource.ITA:
        # No human label: the estimate becomes the type, marked as such.
        image.fst_low = image.fst_high = derivative.fst_ita
        image.fst_source = FstSource.ITA if derivative.fst_ita else ""
    image.save(update_fields=["preprocessed", "thumbnail", "ita", "fst_ita", "hair_removed",
                              "metadata", "fst_low", "fst_high", "fst_source"])


@register("catalog.preprocess", queue="cpu", label="Preprocess images")
def preprocess_dataset(job: Job, progress: JobContext) -> dict[str, Any]:
    """Derivatives for every image with a file and none yet (all with force). Each image is
    committed on its own, so a resumed job continues where the last attempt stopped."""
    dataset = Dataset.objects.get(pk=job.params["dataset_id"])
    hair_removal = bool(job.params.get("hair_removal"))
    pending = list(images_to_preprocess(dataset=dataset, force=bool(job.params.get("force")))
                   .values_list("pk", flat=True))
    failed: list[str] = []
    for index, pk in enumerate(pending, start=1):
        image = Image.objects.select_related("dataset").get(pk=pk)
        try:
            preprocess_one(image, hair_removal=hair_removal)
        except ImageDecodeError as exc:
            failed.append(image.source_id)
            progress.log(f"{image.source_id}: {exc}")
        progress.update(index, len(pending), f"{index} of {len(pending)} images")
    labelled_by_ita = dataset.images.filter(fst_source=FstSource.ITA).count()
    agree = dataset.images.filter(
        ~Q(fst_source=FstSource.ITA), fst_ita__isnull=False, fst_low__isnull=False,
    )
    return {"dataset": dataset.name, "processed": len(pending) - len(failed),
            "failed": failed, "fst_from_ita": labelled_by_ita,
            "ita_within_label_range": _ita_agreement(agree)}


def _ita_agreement(images) -> str:
    rows = list(images.values_list("fst_low", "fst_high", "fst_ita"))
    if not rows:
        return "no labelled images with an ITA estimate"
    inside = sum(low <= ita <= high for low, high, ita in rows)
    within_one = sum(low - 1 <= ita <= high + 1 for low, high, ita in rows)
    return (f"{inside}/{len(rows)} in the labelled range, "
            f"{within_one}/{len(rows)} within one type")
