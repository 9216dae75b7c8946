from django.core.management.base import BaseCommand, CommandError

from catalog.importing import CatalogImportError
from catalog.models import Dataset
from catalog.services import dataset_split


class Command(BaseCommand):
    help = (
        "Assign train/val/test splits, stratified by diagnosis x FST and grouped by "
        "lesion/patient, reproducibly from a seed."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--fractions",
            type=float,
            nargs=3,
            default=[0.7, 0.15, 0.15],
            metavar=("TRAIN", "VAL", "TEST"),
        )

    def handle(self, *args, dataset, seed, fractions, **options):
        try:
            ds = Dataset.objects.get(name=dataset)
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {dataset!r}") from None
        try:
            counts = dataset_split(dataset=ds, seed=seed, fractions=tuple(fractions))
        except CatalogImportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{ds.name} split with seed {seed}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
