from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from fairskin.progress import ConsoleProgress
from jobs import artifacts
from jobs.runner import run_here
from training.models import Run
from training.services import RunConfigError, run_import_external


class Command(BaseCommand):
    help = (
        "Import externally trained textual-inversion embeddings or LoRA weights (diffusers, "
        "A1111, kohya, or a merged token dictionary) as a run. The last two lines printed "
        "are the run id and its artifacts folder."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--base-model", help="the model the file was trained for")
        parser.add_argument(
            "--parent", type=int, help="a textual-inversion run whose tokens a LoRA goes with"
        )
        parser.add_argument("--name", default="")

    def handle(self, *args, file, base_model, parent, name, **options):
        parent_run = None
        if parent is not None:
            parent_run = Run.objects.select_related("job").filter(pk=parent).first()
            if parent_run is None:
                raise CommandError(f"no run {parent}")
        try:
            run = run_import_external(
                source=file, base_model=base_model, parent=parent_run, name=name, enqueue=False
            )
        except RunConfigError as exc:
            raise CommandError(str(exc)) from exc
        job = run.job
        if job is None:  # run_import_external gives every run a job
            raise CommandError(f"run {run.pk} has no job")
        outcome = run_here(job_id=job.pk, echo=ConsoleProgress(self.stderr))
        run.refresh_from_db()
        if outcome != "succeeded":
            job.refresh_from_db()
            error = job.error
            run.delete()  # a refused file leaves no run behind
            job.delete()
            raise CommandError(f"import failed: {error}\nNothing was imported.")
        self.stdout.write(
            f"imported {file.name} as {run.get_kind_display()} run {run.pk}: "
            f"{len(run.tokens)} token(s) {' '.join(run.tokens)}"
        )
        self.stdout.write(str(run.pk))
        self.stdout.write(artifacts.uri(run.artifacts_dir))
