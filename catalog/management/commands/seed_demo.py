import csv
import io
import tempfile
import zipfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.importing import dataset_import
from catalog.models import Dataset
from catalog.selectors import format_summary_table
from catalog.services import dataset_preprocess_launch, dataset_split
from fairskin.datasets.sources import ZipImages
from fairskin.imaging.demo import demo_items
from fairskin.progress import ConsoleProgress
from jobs.runner import run_here

DEMO_DESCRIPTION = (
    "Procedurally drawn lesion images for the seven classes on skin tones spanning FST I-VI. "
    "For trying FairSkin out and for tests; not medical data."
)


class Command(BaseCommand):
    help = (
        "Draw the procedural demo dataset, import it as 'demo' through the generic CSV "
        "importer, preprocess it and split it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--per-class", type=int, default=24)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--name", default="demo")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="do nothing when the dataset already exists (make run)",
        )
        parser.add_argument(
            "--export",
            metavar="DIR",
            help="import nothing: write demo.csv and demo-images.zip to DIR, "
            "to upload through Admin → Catalog → Datasets → Import a dataset",
        )

    def handle(self, *args, per_class, seed, name, if_missing, export, **options):
        if per_class < 1:
            raise CommandError("--per-class must be at least 1")
        if export:
            metadata, archive = write_upload(Path(export), per_class, seed)
            self.stdout.write(f"{metadata}\n{archive}")
            return
        if if_missing and Dataset.objects.filter(name=name).exists():
            self.stdout.write(f"dataset {name!r} exists; not seeding it again")
            return
        # The same files --export writes, imported as an upload of them would be.
        with tempfile.TemporaryDirectory() as folder:
            metadata, archive = write_upload(Path(folder), per_class, seed)
            images = ZipImages(archive)
            try:
                result = dataset_import(
                    fmt="csv",
                    metadata=metadata.read_bytes(),
                    metadata_name=metadata.name,
                    images=images,
                    name=name,
                    licence="Procedural images drawn by FairSkin; no restrictions",
                    description=DEMO_DESCRIPTION,
                )
            finally:
                images.close()
        dataset = result.dataset
        job = dataset_preprocess_launch(dataset=dataset, enqueue=False)
        if run_here(job_id=job.pk, echo=ConsoleProgress(self.stderr)) != "succeeded":
            job.refresh_from_db()
            raise CommandError(f"preprocessing failed: {job.error}")
        job.refresh_from_db()
        counts = dataset_split(dataset=dataset, seed=seed)
        self.stdout.write(
            f"Demo dataset {name!r}: {result.created} images ({per_class} per class, seed {seed})"
        )
        self.stdout.write(format_summary_table(result.summary))
        self.stdout.write("Splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        self.stdout.write(
            f"ITA estimate vs intended skin type: {job.result['ita_within_label_range']}"
        )


def write_upload(folder: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    """The demo dataset as files a user uploads: a generic metadata CSV and an image zip."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["file", "diagnosis", "fst", "group_id"])
    archive = folder / "demo-images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for item in demo_items(per_class, seed):
            buffer = io.BytesIO()
            item.image.save(buffer, format="PNG", compress_level=1)
            zf.writestr(item.file_name, buffer.getvalue())
            writer.writerow([item.file_name, item.diagnosis.value, item.fst, item.group_id])
    metadata = folder / "demo.csv"
    metadata.write_text(rows.getvalue())
    return metadata, archive
