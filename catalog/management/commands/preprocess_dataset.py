from django.core.management.base import BaseCommand, CommandError

from catalog.models import Dataset
from catalog.services import dataset_preprocess_launch
from fairskin.progress import ConsoleProgress
from jobs.broker import BrokerUnavailable
from jobs.runner import run_here


class Command(BaseCommand):
    help = (
        "Make 512 px derivatives, thumbnails and ITA skin-tone estimates as a job on the "
        "cpu queue; with --wait, run it here in the foreground."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset")
        parser.add_argument("--hair-removal", action="store_true", help="DullRazor first")
        parser.add_argument("--force", action="store_true", help="redo images already done")
        parser.add_argument(
            "--wait", action="store_true", help="run in this process instead of on a worker"
        )

    def handle(self, *args, dataset, hair_removal, force, wait, **options):
        try:
            ds = Dataset.objects.get(name=dataset)
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {dataset!r}") from None
        try:
            job = dataset_preprocess_launch(
                dataset=ds, hair_removal=hair_removal, force=force, enqueue=not wait
            )
        except BrokerUnavailable as exc:
            raise CommandError(f"{exc} (use --wait to run it here)") from exc
        if not wait:
            self.stdout.write(f"queued preprocessing of {ds.name} as job {job.pk}")
            return
        outcome = run_here(job_id=job.pk, echo=ConsoleProgress(self.stderr))
        job.refresh_from_db()
        if outcome != "succeeded":
            raise CommandError(f"job {job.pk} {outcome}: {job.error}")
        for key, value in job.result.items():
            self.stdout.write(f"{key}: {value}")
        self.stdout.write(f"job {job.pk}")
