"""Move an installation's artifacts into the artifact store and record them by key."""

from django.core.management.base import BaseCommand, CommandError

from fairskin.store.errors import StoreError
from generation.services import batches_artifacts_upload
from jobs import artifacts
from review.services.release import releases_artifacts_upload
from training.services import runs_artifacts_upload


class Command(BaseCommand):
    help = (
        "Upload every run's, batch's and release's artifacts from this host's folders into "
        "the artifact store (the bucket when AWS_STORAGE_BUCKET_NAME is set, else "
        "FAIRSKIN_ARTIFACTS_ROOT) and rewrite their rows from host paths to store keys. "
        "Idempotent: run it again and only what changed is uploaded."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be done; change nothing"
        )

    def handle(self, *args, dry_run: bool = False, **options):
        target = artifacts.store()
        try:
            target.check()  # a missing bucket or refused credentials stop it before anything
        except StoreError as exc:
            raise CommandError(f"{exc}\nNothing was uploaded and no row was changed.") from exc
        self.stdout.write(f"artifact store: {target.describe()}")
        done = missing = 0
        try:
            for upload in (
                runs_artifacts_upload,
                batches_artifacts_upload,
                releases_artifacts_upload,
            ):
                for line, ok in upload(dry_run=dry_run):
                    self.stdout.write(line)
                    done += ok
                    missing += not ok
        except StoreError as exc:  # an outage midway: rows already moved stay moved
            raise CommandError(
                f"{exc}\n{done} were moved before it; run the command again to carry on."
            ) from exc
        verb = "would be" if dry_run else "are"
        self.stdout.write(f"{done} {verb} in the store; {missing} left as they are")
