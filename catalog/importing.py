"""The catalog's import pipeline: checking an uploaded metadata file and image archive, then
writing a dataset's image rows and stored originals, all or nothing.

The upload form runs the same checks (``dataset_metadata_parse``, ``image_archive_check``)
that ``dataset_import`` runs, so a file the form accepts never fails later on a column limit.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.validators import validate_slug
from django.db import models, transaction

from catalog.models import (
    AllowedUse,
    Dataset,
    DatasetImport,
    FstSource,
    Image,
    Origin,
    SourceFormat,
)
from catalog.selectors import dataset_summary
from fairskin.datasets import ArchiveError, ImageRecord, MetadataError, ParseResult, parse_metadata
from fairskin.datasets.sources import ImageSource
from fairskin.datasets.table import MetadataSource
from fairskin.errors import ApplicationError
from fairskin.imaging.decode import ImageDecodeError, decode_image
from fairskin.progress import Progress, SilentProgress

DEFAULT_LICENCES = {
    SourceFormat.FITZPATRICK17K: "CC BY-NC-SA 3.0",
    SourceFormat.DDI: "Stanford DDI research use agreement",
    SourceFormat.HAM10000: "CC BY-NC 4.0",
}
# The planning document keeps tone-imbalanced HAM10000 for textual inversion only.
DEFAULT_ALLOWED_USE = {SourceFormat.HAM10000: AllowedUse.TEXTUAL_INVERSION_ONLY}


class CatalogImportError(ApplicationError, ValueError):
    """An import refused; the message names the file and row. Nothing was written."""


@dataclass(frozen=True)
class _StoredFile:
    name: str
    sha256: str
    width: int
    height: int


def column_max_length(model: type[models.Model], field: str) -> int:
    """The max_length of a model's bounded text column, for checks made before a write."""
    column = model._meta.get_field(field)
    if not isinstance(column, models.Field) or column.max_length is None:
        raise TypeError(f"{model.__name__}.{field} is not a column with a max_length")
    return column.max_length


# The record values that land in a bounded Image column, in the order they are reported.
_BOUNDED_RECORD_VALUES = (
    ("file_name", "image file name"),
    ("source_id", "source id"),
    ("group_id", "group id"),
    ("source_label", "label"),
)
# A stored original is named by its digest; the suffix is kept only when it looks like one.
_MAX_SUFFIX = 16


def _too_long(what: str, value: str, limit: int) -> str:
    return f"{what} {value!r} is {len(value)} characters; at most {limit} can be stored"


def _record_length_problem(record: ImageRecord) -> str | None:
    """Why a parsed record cannot be stored as it is, or None when every value fits."""
    for field, what in _BOUNDED_RECORD_VALUES:
        value = getattr(record, field) or ""
        limit = column_max_length(Image, field)
        if len(value) > limit:
            return _too_long(what, value, limit)
    return None


def dataset_metadata_parse(
    *, fmt: str, metadata: MetadataSource, metadata_name: str, mapping: str = "strict"
) -> ParseResult:
    """Parse a metadata file and check that every value fits the column that will hold it.

    The one check both the upload form and the import run, so a file the form accepts never
    fails later on a database limit. Raises CatalogImportError naming the file and row.
    """
    name_limit = column_max_length(DatasetImport, "metadata_name")
    if len(metadata_name) > name_limit:
        raise CatalogImportError(_too_long("metadata file name", metadata_name, name_limit))
    try:
        parsed = parse_metadata(fmt, metadata, mapping=mapping, file_name=metadata_name)
    except (MetadataError, ValueError) as exc:
        raise CatalogImportError(str(exc)) from exc
    for record in parsed.records:
        problem = _record_length_problem(record)
        if problem:
            raise CatalogImportError(f"{metadata_name}, data row {record.row_number}: {problem}")
    return parsed


def _check_dataset_fields(*, name: str, licence: str | None) -> None:
    name_limit = column_max_length(Dataset, "name")
    if len(name) > name_limit:
        raise CatalogImportError(_too_long("dataset name", name, name_limit))
    try:
        validate_slug(name)  # the name becomes a storage folder
    except ValidationError as exc:
        raise CatalogImportError(f"dataset name {name!r}: {exc.messages[0]}") from exc
    licence_limit = column_max_length(Dataset, "licence")
    if licence is not None and len(licence) > licence_limit:
        raise CatalogImportError(_too_long("licence", licence, licence_limit))


def image_archive_check(*, archive: Any, archive_name: str) -> None:
    """Refuse a zip holding a file whose name no image row could store, naming it.

    Members are matched to rows by base name, so such a member could never be imported.
    """
    limit = column_max_length(Image, "file_name")
    try:
        with zipfile.ZipFile(archive) as opened:
            names = opened.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CatalogImportError(f"{archive_name}: not a readable zip archive: {exc}") from exc
    for member in names:
        base_name = member.rsplit("/", 1)[-1]
        if len(base_name) > limit:
            raise CatalogImportError(
                f"{archive_name}: zip member {member!r}: "
                + _too_long("its file name", base_name, limit)
            )


RECORD_FIELDS = (
    "file_name",
    "diagnosis",
    "source_label",
    "fst_low",
    "fst_high",
    "fst_source",
    "fst_second",
    "group_id",
    "metadata",
)
FILE_FIELDS = ("original", "sha256", "width", "height", "missing_file")


def image_record_fields(*, record: ImageRecord) -> dict[str, Any]:
    """The Image model's label fields for one parsed metadata record (no file fields)."""
    fst_low = fst_high = None
    fst_source = ""
    if record.fst is not None:
        fst_low, fst_high, fst_source = record.fst.low, record.fst.high, FstSource.DATASET
    elif record.fst_second is not None:
        # A second human label beats an ITA estimate when the first label is unknown.
        fst_low = fst_high = record.fst_second
        fst_source = FstSource.SECOND_LABEL
    return {
        "file_name": record.file_name,
        "diagnosis": record.diagnosis.value,
        "source_label": record.source_label,
        "fst_low": fst_low,
        "fst_high": fst_high,
        "fst_source": fst_source,
        "fst_second": record.fst_second,
        "group_id": record.group_id or "",
        "metadata": record.extra,
    }


def _store_original(
    *, dataset_name: str, record: ImageRecord, data: bytes, metadata_name: str, written: list[str]
) -> _StoredFile:
    try:
        image = decode_image(
            data, max_pixels=settings.FAIRSKIN_MAX_IMAGE_PIXELS, name=record.file_name
        )
    except ImageDecodeError as exc:
        raise CatalogImportError(f"{metadata_name}, data row {record.row_number}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    suffix = record.file_name.rsplit(".", 1)[-1].lower() if "." in record.file_name else ""
    if not (suffix.isascii() and suffix.isalnum() and len(suffix) <= _MAX_SUFFIX):
        # A long or odd "extension" would make the stored name overflow its column.
        suffix = "bin"
    # Content-addressed, so a re-import finds the file it already stored.
    name = f"catalog/{dataset_name}/original/{digest[:2]}/{digest}.{suffix}"
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(data))
        written.append(saved)
        name = saved
    return _StoredFile(name=name, sha256=digest, width=image.width, height=image.height)


def dataset_import(
    *,
    fmt: str,
    metadata: bytes,
    metadata_name: str,
    images: ImageSource | None = None,
    name: str | None = None,
    mapping: str = "strict",
    licence: str | None = None,
    allowed_use: str | None = None,
    description: str = "",
    user: Any = None,
    progress: Progress | None = None,
) -> DatasetImport:
    """Import a metadata file (and its images, when given) into a dataset, all or nothing.

    Any bad row or image, or a value longer than its column, raises CatalogImportError naming
    the file and row; then no row is written and no newly stored file is kept. Importing the
    same data again changes nothing.
    """
    progress = progress or SilentProgress()
    started = time.perf_counter()
    source_format = SourceFormat(fmt)
    name = name or source_format.value
    _check_dataset_fields(name=name, licence=licence)
    existing_dataset = Dataset.objects.filter(name=name).first()
    if existing_dataset and existing_dataset.source_format != source_format:
        raise CatalogImportError(
            f"dataset {name!r} holds {existing_dataset.source_format} data; "
            f"choose another --name for {fmt} metadata"
        )
    parsed = dataset_metadata_parse(
        fmt=fmt, metadata=metadata, metadata_name=metadata_name, mapping=mapping
    )

    written: list[str] = []
    try:
        stored: dict[str, _StoredFile] = {}
        if images is not None:
            total = len(parsed.records)
            for index, record in enumerate(parsed.records, start=1):
                try:
                    data = images.read(record.file_name)
                except ArchiveError as exc:
                    raise CatalogImportError(
                        f"{images.description}, for {metadata_name} data row "
                        f"{record.row_number}: {exc}"
                    ) from exc
                if data is not None:
                    stored[record.source_id] = _store_original(
                        dataset_name=name,
                        record=record,
                        data=data,
                        metadata_name=metadata_name,
                        written=written,
                    )
                progress.update(index, total, f"checked {index} of {total} image files")
        with transaction.atomic():
            result = _write_rows(
                name=name,
                source_format=source_format,
                parsed=parsed,
                stored=stored,
                images_given=images is not None,
                mapping=mapping,
                licence=licence,
                allowed_use=allowed_use,
                description=description,
                user=user,
                metadata_name=metadata_name,
                started=started,
            )
    except BaseException:
        for file_name in written:
            default_storage.delete(file_name)
        raise
    return result


def _write_rows(
    *,
    name,
    source_format,
    parsed,
    stored,
    images_given,
    mapping,
    licence,
    allowed_use,
    description,
    user,
    metadata_name,
    started,
) -> DatasetImport:
    dataset, _ = Dataset.objects.get_or_create(
        name=name,
        defaults={
            "source_format": source_format,
            "licence": licence if licence is not None else DEFAULT_LICENCES.get(source_format, ""),
            "allowed_use": allowed_use or DEFAULT_ALLOWED_USE.get(source_format, AllowedUse.ALL),
            "description": description,
            "mapping_tier": mapping,
            "created_by": user if getattr(user, "pk", None) else None,
        },
    )
    changes = {}
    if licence is not None and dataset.licence != licence:
        changes["licence"] = licence
    if allowed_use and dataset.allowed_use != allowed_use:
        changes["allowed_use"] = allowed_use
    if dataset.mapping_tier != mapping:
        changes["mapping_tier"] = mapping
    if changes:
        Dataset.objects.filter(pk=dataset.pk).update(**changes)

    existing = {img.source_id: img for img in Image.objects.filter(dataset=dataset)}
    to_create: list[Image] = []
    to_update: list[Image] = []
    unchanged = 0
    for record in parsed.records:
        fields = image_record_fields(record=record)
        found = stored.get(record.source_id)
        image = existing.get(record.source_id)
        if image is None:
            image = Image(dataset=dataset, origin=Origin.REAL, source_id=record.source_id, **fields)
            to_create.append(image)
        else:
            if record.fst is None and image.fst_source == FstSource.ITA:
                # Keep the estimate made from the pixels when the metadata has no label.
                for key in ("fst_low", "fst_high", "fst_source"):
                    fields[key] = getattr(image, key)
            changed = {k: v for k, v in fields.items() if getattr(image, k) != v}
            if found and image.sha256 != found.sha256:
                changed["sha256"] = found.sha256
            elif not found and not image.original and images_given and not image.missing_file:
                changed["missing_file"] = True
            if not changed:
                unchanged += 1
                continue
            for key, value in fields.items():
                setattr(image, key, value)
            to_update.append(image)
        if found:
            image.original.name = found.name
            image.sha256, image.width, image.height = found.sha256, found.width, found.height
            image.missing_file = False
        elif not image.original:
            image.missing_file = True

    Image.objects.bulk_create(to_create, batch_size=2000)
    Image.objects.bulk_update(to_update, [*RECORD_FIELDS, *FILE_FIELDS], batch_size=2000)

    summary = dataset_summary(dataset=dataset)
    return DatasetImport.objects.create(
        dataset=dataset,
        source_format=source_format,
        variant=parsed.variant,
        metadata_name=metadata_name,
        mapping_tier=mapping,
        rows=len(parsed.records) + len(parsed.excluded),
        created=len(to_create),
        updated=len(to_update),
        unchanged=unchanged,
        missing_files=summary["missing_files"],
        excluded=[list(row) for row in parsed.excluded],
        summary=summary,
        seconds=round(time.perf_counter() - started, 3),
        created_by=user if getattr(user, "pk", None) else None,
    )
