"""Worker-side catalog services: importing an admin upload, and preprocessing a dataset's
images (called by catalog.job_kinds)."""

from __future__ import annotations

from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Q

from catalog.importing import dataset_import
from catalog.models import Dataset, FstSource, Image
from catalog.selectors import images_to_preprocess
from fairskin.datasets.sources import ZipImages
from fairskin.imaging.decode import ImageDecodeError
from fairskin.imaging.preprocess import preprocess_image
from fairskin.progress import Progress
from jobs.lease import LeaseLost
from jobs.runner import is_transient


def dataset_upload_import(
    *,
    fmt: str,
    metadata_path: str,
    metadata_name: str,
    images_path: str | None,
    name: str,
    mapping: str,
    allowed_use: str | None,
    licence: str | None,
    user: Any,
    progress: Progress,
) -> dict[str, Any]:
    """Import an upload that dataset_upload_launch saved to storage, then delete the upload
    (also after a refusal; kept for the retry after an outage or a lost lease)."""
    upload = [path for path in (metadata_path, images_path) if path]
    if not default_storage.exists(metadata_path):
        raise FileNotFoundError(
            "the uploaded files were removed after this import ended; upload them again to import"
        )
    images = None
    try:
        with default_storage.open(metadata_path) as fh:
            metadata = fh.read()
        if images_path:
            images = ZipImages(default_storage.open(images_path))
        result = dataset_import(
            fmt=fmt,
            metadata=metadata,
            metadata_name=metadata_name,
            images=images,
            name=name,
            mapping=mapping,
            allowed_use=allowed_use,
            licence=licence,
            user=user,
            progress=progress,
        )
    except Exception as exc:
        # A database outage re-queues the import, and an attempt that lost its lease hands
        # on to another: both need the upload.
        if not is_transient(exc) and not isinstance(exc, LeaseLost):
            _delete_upload(upload)
        raise
    finally:
        if images is not None:
            images.close()
    _delete_upload(upload)
    progress.log(
        f"{result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.missing_files} missing files"
    )
    return {
        "dataset": result.dataset.name,
        "import_id": result.pk,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "missing_files": result.missing_files,
        "excluded": len(result.excluded),
    }


def _delete_upload(paths: list[str]) -> None:
    for path in paths:
        default_storage.delete(path)


def image_preprocess(image: Image, *, hair_removal: bool) -> None:
    with image.original.open("rb") as fh:
        data = fh.read()
    derivative = preprocess_image(data, name=image.file_name, hair_removal=hair_removal)
    stem = image.sha256 or f"image-{image.pk}"
    suffix = "-dullrazor" if hair_removal else ""
    image.preprocessed.save(f"{stem}{suffix}.png", ContentFile(derivative.png), save=False)
    image.thumbnail.save(f"{stem}{suffix}.jpg", ContentFile(derivative.thumbnail_jpeg), save=False)
    image.ita, image.fst_ita, image.hair_removed = (
        derivative.ita,
        derivative.fst_ita,
        derivative.hair_removed,
    )
    metadata = dict(image.metadata)
    metadata["ita_method"] = derivative.ita_method
    image.metadata = metadata
    if image.fst_low is None or image.fst_source == FstSource.ITA:
        # No human label: the estimate becomes the type, marked as such.
        image.fst_low = image.fst_high = derivative.fst_ita
        image.fst_source = FstSource.ITA if derivative.fst_ita else ""
    image.save(
        update_fields=[
            "preprocessed",
            "thumbnail",
            "ita",
            "fst_ita",
            "hair_removed",
            "metadata",
            "fst_low",
            "fst_high",
            "fst_source",
        ]
    )


def dataset_preprocess(
    *, dataset_id: int, hair_removal: bool, force: bool, progress: Progress
) -> dict[str, Any]:
    """Derivatives for every image with a file and none yet (all with force). Each image is
    committed on its own, so a resumed job continues where the last attempt stopped."""
    dataset = Dataset.objects.get(pk=dataset_id)
    pending = list(images_to_preprocess(dataset=dataset, force=force).values_list("pk", flat=True))
    failed: list[str] = []
    for index, pk in enumerate(pending, start=1):
        image = Image.objects.select_related("dataset").get(pk=pk)
        try:
            image_preprocess(image, hair_removal=hair_removal)
        except ImageDecodeError as exc:
            failed.append(image.source_id)
            progress.log(f"{image.source_id}: {exc}")
        progress.update(index, len(pending), f"{index} of {len(pending)} images")
    labelled_by_ita = dataset.images.filter(fst_source=FstSource.ITA).count()
    agree = dataset.images.filter(
        ~Q(fst_source=FstSource.ITA),
        fst_ita__isnull=False,
        fst_low__isnull=False,
    )
    return {
        "dataset": dataset.name,
        "processed": len(pending) - len(failed),
        "failed": failed,
        "fst_from_ita": labelled_by_ita,
        "ita_within_label_range": _ita_agreement(agree),
    }


def _ita_agreement(images) -> str:
    rows = list(images.values_list("fst_low", "fst_high", "fst_ita"))
    if not rows:
        return "no labelled images with an ITA estimate"
    inside = sum(low <= ita <= high for low, high, ita in rows)
    within_one = sum(low - 1 <= ita <= high + 1 for low, high, ita in rows)
    return f"{inside}/{len(rows)} in the labelled range, {within_one}/{len(rows)} within one type"
