"""Catalog import speed: the project's bulk importer vs row-by-row ORM inserts, same data.

Usage: .venv/bin/python bench/catalog_import.py [--repeats 3]
Runs against DATABASE_URL (default: a scratch PostgreSQL database `fairskin_bench` on
127.0.0.1, created if missing) and prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fairskin_bench")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fairskin_site.settings")
METADATA = ROOT / "tests" / "fixtures" / "data" / "fitzpatrick17k.csv"


def ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    if not url.startswith("postgres"):
        return
    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from catalog.importing import dataset_import, image_record_fields
    from catalog.models import Dataset, Image, Origin
    from fairskin.datasets import parse_metadata
    from fairskin.imaging.demo import draw_lesion
    from fairskin.imaging.preprocess import preprocess_image

    call_command("migrate", verbosity=0)
    data = METADATA.read_bytes()

    def clear() -> None:
        Dataset.objects.all().delete()

    def bulk() -> float:
        clear()
        started = time.perf_counter()
        dataset_import(fmt="fitzpatrick17k", metadata=data, metadata_name=METADATA.name)
        return time.perf_counter() - started

    def reimport() -> float:
        started = time.perf_counter()
        result = dataset_import(fmt="fitzpatrick17k", metadata=data, metadata_name=METADATA.name)
        assert result.created == 0 and result.unchanged == 16_560
        return time.perf_counter() - started

    def row_by_row() -> float:
        clear()
        started = time.perf_counter()
        parsed = parse_metadata("fitzpatrick17k", data, file_name=METADATA.name)
        with transaction.atomic():
            dataset = Dataset.objects.create(name="fitzpatrick17k", source_format="fitzpatrick17k")
            for record in parsed.records:
                Image.objects.create(
                    dataset=dataset,
                    origin=Origin.REAL,
                    source_id=record.source_id,
                    missing_file=True,
                    **image_record_fields(record=record),
                )
        return time.perf_counter() - started

    results = {}
    for name, fn in [
        ("bulk importer (dataset_import)", bulk),
        ("re-import, unchanged", reimport),
        ("row-by-row ORM create", row_by_row),
    ]:
        results[name] = [fn() for _ in range(args.repeats)]
    clear()

    images = [draw_lesion("MEL", 1 + i % 6, seed=i) for i in range(20)]
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        pngs.append(buffer.getvalue())
    timings = {}
    for label, kwargs in [
        ("preprocess (512 px + ITA)", {}),
        ("preprocess with DullRazor", {"hair_removal": True}),
    ]:
        started = time.perf_counter()
        for png in pngs:
            preprocess_image(png, **kwargs)
        timings[label] = (time.perf_counter() - started) / len(pngs)
    started = time.perf_counter()
    for i in range(20):
        draw_lesion("BCC", 1 + i % 6, seed=100 + i)
    timings["draw one demo lesion"] = (time.perf_counter() - started) / 20

    server = (
        connection.cursor().connection.info.server_version
        if connection.vendor == "postgresql"
        else ""
    )
    print(
        f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {connection.vendor} {server}"
    )
    print(
        f"Data: {METADATA.name}, 16,577 rows (16,560 kept), no image files; "
        f"median of {args.repeats}\n"
    )
    print("| import of fitzpatrick17k.csv | median s | min s | rows/s |")
    print("|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {16_560 / median:,.0f} |")
    ratio = statistics.median(results["row-by-row ORM create"]) / statistics.median(
        results["bulk importer (dataset_import)"]
    )
    print(f"\nBulk importer is {ratio:.1f}x faster than row-by-row creates.\n")
    print("| per image (20 images, 512 px, one process) | ms |")
    print("|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds * 1000:.0f} |")


if __name__ == "__main__":
    main()
