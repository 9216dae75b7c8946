from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.importing import CatalogImportError, dataset_import, image_archive_check
from catalog.models import AllowedUse
from catalog.selectors import format_summary_table
from fairskin.datasets import FORMATS, ArchiveError
from fairskin.datasets.sources import open_image_source
from fairskin.progress import ConsoleProgress


class Command(BaseCommand):
    help = (
        "Import a dataset's metadata (and its images, from a folder or a zip) into the "
        "catalog, all or nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
        parser.add_argument("--metadata", required=True, type=Path, help="metadata CSV file")
        parser.add_argument("--images", type=Path, help="folder or .zip holding the images")
        parser.add_argument("--name", help="dataset name (default: the format's name)")
        parser.add_argument(
            "--mapping",
            choices=["strict", "broad"],
            default="strict",
            help="label mapping tier to the seven classes",
        )
        parser.add_argument(
            "--allowed-use",
            choices=AllowedUse.values,
            help="default: textual_inversion_only for ham10000, else all",
        )
        parser.add_argument("--licence", help="override the dataset's default licence")

    def handle(self, *args, fmt, metadata, images, name, mapping, allowed_use, licence, **options):
        if not metadata.is_file():
            raise CommandError(f"metadata file {metadata} does not exist")
        source = None
        try:
            if images is not None:
                source = open_image_source(images)
                if images.is_file():
                    image_archive_check(archive=images, archive_name=images.name)
            result = dataset_import(
                fmt=fmt,
                metadata=metadata.read_bytes(),
                metadata_name=metadata.name,
                images=source,
                name=name,
                mapping=mapping,
                allowed_use=allowed_use,
                licence=licence,
                progress=ConsoleProgress(self.stderr) if source is not None else None,
            )
        except (CatalogImportError, ArchiveError) as exc:
            raise CommandError(f"{exc}\nNothing was imported.") from exc
        finally:
            if source is not None:
                source.close()
        out = self.stdout.write
        out(
            f"Dataset {result.dataset.name} ({result.variant}, {mapping} mapping): "
            f"{result.rows} rows read in {result.seconds:.2f} s"
        )
        out(f"  created {result.created}, updated {result.updated}, unchanged {result.unchanged}")
        out(
            f"  excluded {len(result.excluded)} rows"
            + (f" ({result.excluded[0][2]})" if result.excluded else "")
        )
        out(f"  missing image files: {result.missing_files}")
        out("")
        out(format_summary_table(result.summary))
