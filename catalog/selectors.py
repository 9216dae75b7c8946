"""Reads on the catalog."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Count, F, Q, QuerySet

from catalog.models import Dataset, Image, Origin, SourceFormat
from fairskin.labels import Diagnosis, FstRange

FST_COLUMNS = ("I", "II", "III", "IV", "V", "VI")


def _fst_column(low: int | None, high: int | None) -> str:
    return "?" if low is None or high is None else str(FstRange(low, high))


def dataset_summary(*, dataset: Dataset) -> dict[str, Any]:
    """Counts per diagnosis x FST (ranges such as I–II get their own column), plus totals."""
    cells = (
        Image.objects.filter(dataset=dataset)
        .values("diagnosis", "fst_low", "fst_high")
        .annotate(n=Count("id"))
    )
    table: dict[str, dict[str, int]] = {}
    ranges: set[tuple[int, int]] = set()
    for cell in cells:
        low, high = cell["fst_low"], cell["fst_high"]
        column = _fst_column(low, high)
        if low is not None and high is not None and low != high:
            ranges.add((low, high))
        row = table.setdefault(cell["diagnosis"], {})
        row[column] = row.get(column, 0) + cell["n"]
    present = {column for row in table.values() for column in row}
    # Exact types always show all six columns, so an empty cell such as DF x VI is visible.
    order = list(FST_COLUMNS) if present & set(FST_COLUMNS) else []
    order += [str(FstRange(low, high)) for low, high in sorted(ranges)] + ["?"]
    rows = [d.value for d in Diagnosis if d.value in table]
    totals = dataset.images.aggregate(
        images=Count("id"),
        missing_files=Count("id", filter=Q(missing_file=True)),
        with_files=Count("id", filter=~Q(original="")),
        preprocessed=Count("id", filter=~Q(preprocessed="")),
    )
    return {
        "columns": order,
        "rows": [
            {
                "diagnosis": dx,
                "counts": [table[dx].get(c, 0) for c in order],
                "total": sum(table[dx].values()),
            }
            for dx in rows
        ],
        "column_totals": [sum(table[dx].get(c, 0) for dx in rows) for c in order],
        **totals,
    }


def image_browse(
    *,
    dataset: str | None = None,
    diagnosis: str | None = None,
    fst: int | None = None,
    origin: str | None = None,
    split: str | None = None,
) -> QuerySet[Image]:
    """Images matching the browser's filters; an FST matches exact types and ranges holding it."""
    images = Image.objects.select_related("dataset")
    if dataset:
        images = images.filter(dataset__name=dataset)
    if diagnosis:
        images = images.filter(diagnosis=diagnosis)
    if fst:
        images = images.filter(fst_low__lte=fst, fst_high__gte=fst)
    if origin:
        images = images.filter(origin=origin)
    if split is not None and split != "any":
        images = images.filter(split=split)
    return images.order_by("dataset_id", "id")


def format_summary_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table, for the command line."""
    columns = summary["columns"]
    header = f"{'dx':<6}" + "".join(f"{c:>7}" for c in columns) + f"{'total':>8}"
    lines = [header, "-" * len(header)]
    for row in summary["rows"]:
        cells = "".join(f"{n:>7}" for n in row["counts"])
        lines.append(f"{row['diagnosis']:<6}{cells}{row['total']:>8}")
    lines.append("-" * len(header))
    totals = "".join(f"{n:>7}" for n in summary["column_totals"])
    lines.append(f"{'all':<6}{totals}{summary['images']:>8}")
    return "\n".join(lines)


def dataset_split_counts(*, dataset: Dataset) -> dict[str, int]:
    rows = dataset.images.values("split").annotate(n=Count("id"))
    return {row["split"] or "unassigned": row["n"] for row in rows}


def real_control_candidates() -> list[tuple[int, str, int]]:
    """Real images that can stand as controls in a rating study: (id, diagnosis, fst) of every
    real image with one exact skin type, a preprocessed file on disk, and a diagnosis of the
    seven classes (not OTHER)."""
    # fst_low__isnull=False: the nullable column's values are all ints here.
    return cast(
        "list[tuple[int, str, int]]",
        list(
            Image.objects.filter(
                origin=Origin.REAL, fst_low__isnull=False, fst_low=F("fst_high"), missing_file=False
            )
            .exclude(preprocessed="")
            .exclude(diagnosis="OTHER")
            .values_list("id", "diagnosis", "fst_low")
        ),
    )


def images_real_of_type(*, datasets: list[str], fst: int, limit: int) -> QuerySet[Image]:
    """Up to ``limit`` real images of the datasets with exactly skin type ``fst`` and a
    preprocessed file on record, oldest first (a generation batch's reference)."""
    return (
        Image.objects.filter(
            origin=Origin.REAL,
            dataset__name__in=datasets,
            fst_low=fst,
            fst_high=F("fst_low"),
            missing_file=False,
        )
        .exclude(preprocessed="")
        .order_by("id")[:limit]
    )


def images_to_preprocess(*, dataset: Dataset, force: bool) -> QuerySet[Image]:
    """A dataset's images with a file and no derivative yet (every one with a file: force)."""
    images = dataset.images.exclude(original="")
    if not force:
        images = images.filter(preprocessed="")
    return images.order_by("id")


def datasets_all() -> QuerySet[Dataset]:
    return Dataset.objects.order_by("name")


def datasets_synthetic() -> QuerySet[Dataset]:
    """Datasets of generated images (a release's batch writes into one)."""
    return Dataset.objects.filter(source_format=SourceFormat.SYNTHETIC).order_by("name")
