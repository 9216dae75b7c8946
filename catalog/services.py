"""Writes on the catalog: splits, launching imports and preprocessing, synthetic images.

The import pipeline itself lives in ``catalog.importing``.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, cast

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from catalog.importing import CatalogImportError, column_max_length
from catalog.models import Dataset, FstSource, Image, Origin, SourceFormat
from fairskin.datasets.splits import SplitItem, assign_splits, check_fractions
from jobs.models import Job
from jobs.services import job_create


def dataset_split(
    *, dataset: Dataset, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, int]:
    """Assign every image of the dataset to train/val/test, reproducibly from the seed.

    Stratified by diagnosis x FST, grouped by lesion/patient id where the dataset has one.
    """
    try:
        fractions = check_fractions(fractions)
    except ValueError as exc:
        raise CatalogImportError(str(exc)) from exc
    rows = list(dataset.images.values_list("pk", "group_id", "diagnosis", "fst_low", "fst_high"))
    items = [
        SplitItem(key=pk, group=group or f"image-{pk}", stratum=(dx, low, high))
        for pk, group, dx, low, high in rows
    ]
    assignment = assign_splits(items, seed=seed, fractions=fractions)
    with transaction.atomic():
        by_split: dict[str, list[int]] = {}
        for pk, split in assignment.items():
            by_split.setdefault(split, []).append(cast(int, pk))  # SplitItem.key: the pk
        for split, pks in by_split.items():
            Image.objects.filter(pk__in=pks).update(split=split)
        Dataset.objects.filter(pk=dataset.pk).update(
            split_seed=seed, split_fractions=list(fractions)
        )
    return {split: len(pks) for split, pks in sorted(by_split.items())}


def dataset_preprocess_launch(
    *,
    dataset: Dataset,
    hair_removal: bool = False,
    force: bool = False,
    user: Any = None,
    enqueue: bool = True,
) -> Job:
    """Queue the preprocessing job of a dataset (or create it for the caller to run)."""
    return job_create(
        kind="catalog.preprocess",
        params={"dataset_id": dataset.pk, "hair_removal": hair_removal, "force": force},
        title=f"Preprocess {dataset.name}" + (" with hair removal" if hair_removal else ""),
        launched_by=user,
        enqueue=enqueue,
    )


def dataset_upload_launch(
    *,
    fmt: str,
    name: str,
    mapping: str,
    allowed_use: str,
    metadata: Any,
    images: Any,
    user: Any,
    licence: str = "",
) -> Job:
    """Keep an admin upload in storage and queue its import; the job deletes the upload."""
    folder = f"uploads/{uuid.uuid4().hex}"
    saved = [default_storage.save(f"{folder}/metadata.csv", metadata)]
    try:
        if images is not None:
            saved.append(default_storage.save(f"{folder}/images.zip", images))
        return job_create(
            kind="catalog.import",
            params={
                "format": fmt,
                "name": name or fmt,
                "mapping": mapping,
                "allowed_use": allowed_use,
                "licence": licence,
                "metadata_name": metadata.name,
                "metadata_path": saved[0],
                "images_path": saved[1] if len(saved) > 1 else "",
            },
            title=_upload_title(metadata_name=metadata.name, dataset_name=name or fmt),
            launched_by=user,
        )
    except BaseException:
        for path in saved:
            default_storage.delete(path)
        raise


def _upload_title(*, metadata_name: str, dataset_name: str) -> str:
    # A file name may be longer than a job title; the params keep it whole.
    limit = column_max_length(Job, "title")
    title = f"Import {metadata_name} into {dataset_name}"
    if len(title) <= limit:
        return title
    room = limit - len(title) + len(metadata_name) - 1
    return f"Import {metadata_name[:room]}… into {dataset_name}"


def synthetic_image_create(
    *,
    dataset: Dataset,
    source_id: str,
    diagnosis: str,
    fst: int,
    png: bytes,
    thumbnail_jpeg: bytes,
    width: int,
    height: int,
    metadata: dict[str, Any],
) -> Image:
    """A generated image in a synthetic dataset: its PNG and thumbnail files, then its row.

    The file names follow from ``source_id``, so a file an earlier, killed attempt left under
    the same name is overwritten, never kept beside a copy. Call it inside the caller's
    transaction (and fence): a clash on the row raises IntegrityError for the caller to handle.
    """
    image = Image(
        dataset=dataset,
        origin=Origin.SYNTHETIC,
        source_id=source_id,
        file_name=f"{source_id}.png",
        diagnosis=diagnosis,
        fst_low=fst,
        fst_high=fst,
        fst_source=FstSource.DATASET,
        sha256=hashlib.sha256(png).hexdigest(),
        width=width,
        height=height,
        metadata=metadata,
    )
    for field, content, name in (
        (image.preprocessed, png, f"{source_id}.png"),
        (image.thumbnail, thumbnail_jpeg, f"{source_id}.jpg"),
    ):
        target = field.field.generate_filename(image, name)  # the name field.save() writes
        if default_storage.exists(target):
            default_storage.delete(target)
        field.save(name, ContentFile(content), save=False)
    image.save()
    return image


def dataset_synthetic_create(
    *, name: str, licence: str, description: str, created_by: Any = None
) -> Dataset:
    """An empty dataset for generated images, filled by ``synthetic_image_create``."""
    return Dataset.objects.create(
        name=name,
        source_format=SourceFormat.SYNTHETIC,
        licence=licence,
        description=description,
        created_by=created_by,
    )
