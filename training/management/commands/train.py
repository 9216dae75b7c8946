from django.core.management.base import BaseCommand, CommandError

from fairskin.classifier.config import ClassifierConfig
from fairskin.config_types import SettingsError, field_names, parse_settings
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.progress import ConsoleProgress
from jobs import artifacts
from jobs.broker import BrokerUnavailable
from jobs.runner import run_here
from training.models import Run, RunKind
from training.services import RunConfigError, run_create


def _settings(kind: str, items: list[str]) -> dict[str, object]:
    """The --set items as the run's config overrides; the settings are the kind's config's
    fields (its kind comes from --kind, never from --set)."""
    known = (
        field_names(ClassifierConfig)
        if kind == RunKind.CLASSIFIER
        else field_names(TrainConfig, excluding=["kind"])
    )
    try:
        return parse_settings(items, known=known)
    except SettingsError as exc:
        raise CommandError(f"{exc}\nNothing was queued.") from exc


def _check_devices_here(processes: int) -> None:
    """--wait trains in this process: its own machine must show the devices."""
    from fairskin.diffusion.launch import NotEnoughDevices, check_devices

    try:
        check_devices(processes)
    except NotEnoughDevices as exc:
        raise CommandError(f"{exc}\nNothing was queued.") from exc


class Command(BaseCommand):
    help = (
        "Launch a training run (textual inversion, LoRA or joint) on the gpu queue; with "
        "--wait, run it here in the foreground. The last two lines printed are the run id "
        "and its artifacts folder."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=RunKind.values)
        parser.add_argument(
            "--base-model",
            help="tiny, sd15-random, a diffusers folder or a "
            "hub id (default: FAIRSKIN_BASE_MODEL, or the parent's)",
        )
        parser.add_argument(
            "--parent", type=int, help="parent run id (LoRA: a TI run; joint: a LoRA run)"
        )
        parser.add_argument(
            "--dataset",
            action="append",
            default=[],
            dest="datasets",
            help="dataset name (repeatable)",
        )
        parser.add_argument("--diagnosis", action="append", default=[], dest="diagnoses")
        parser.add_argument("--fst", action="append", type=int, default=[], dest="fsts")
        parser.add_argument(
            "--synthetic-dataset",
            action="append",
            default=[],
            dest="synthetic_datasets",
            help="classifier runs: synthetic images mixed in (repeatable)",
        )
        parser.add_argument("--split", default="train", help="train (default), val, test, any")
        parser.add_argument("--steps", type=int)
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            dest="overrides",
            metavar="KEY=VALUE",
            help="any run setting, e.g. lora_rank=8 "
            "(repeatable; a JSON value or plain text: mixed_precision=bf16, "
            'lora_targets=\'["to_q", "to_v"]\')',
        )
        parser.add_argument(
            "--processes",
            type=int,
            help="train on N data-parallel processes (GPUs; gloo ranks on a CPU machine): the "
            "run waits on the gpu-xN queue, or with --wait needs N devices here",
        )
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--wait", action="store_true", help="run in the foreground with a progress bar"
        )

    def handle(
        self,
        *args,
        kind,
        base_model,
        parent,
        datasets,
        diagnoses,
        fsts,
        split,
        steps,
        overrides,
        name,
        wait,
        synthetic_datasets,
        processes=None,
        **options,
    ):
        config = _settings(kind, overrides)
        if steps is not None:
            if kind == RunKind.CLASSIFIER:
                raise CommandError("classifier runs count epochs: use --set epochs=N")
            config["steps"] = steps
        if processes is not None:
            if kind == RunKind.CLASSIFIER:
                raise CommandError("classifier runs train on one process\nNothing was queued.")
            config["processes"] = processes
            if wait and processes > 1:  # the settings first, then this machine's devices
                try:
                    TrainConfig.build(kind, config)
                except ConfigError as exc:
                    raise CommandError(f"{exc}\nNothing was queued.") from exc
                _check_devices_here(processes)
        parent_run = None
        if parent is not None:
            parent_run = Run.objects.select_related("job").filter(pk=parent).first()
            if parent_run is None:
                raise CommandError(f"no run {parent}")
        selection = {
            "datasets": datasets,
            "diagnoses": diagnoses,
            "fsts": fsts or [1, 2, 3, 4, 5, 6],
            "split": split,
            "synthetic_datasets": synthetic_datasets,
        }
        try:
            run = run_create(
                kind=kind,
                selection=selection,
                base_model=base_model,
                config=config,
                parent=parent_run,
                name=name,
                enqueue=not wait,
            )
        except RunConfigError as exc:
            raise CommandError(f"{exc}\nNothing was queued.") from exc
        except BrokerUnavailable as exc:
            raise CommandError(f"{exc} (use --wait to train here)") from exc
        self.stdout.write(
            f"run {run.pk}: {run.get_kind_display()} on {run.image_count} images, "
            f"base model {run.base_model}"
        )
        if not wait:
            queue = run.job.queue if run.job else "gpu"
            self.stdout.write(f"queued as job {run.job_id} on the {queue} queue")
            self.stdout.write(str(run.pk))
            self.stdout.write(artifacts.uri(run.artifacts_dir))
            return
        job = run.job
        if job is None:  # run_create gives every run a job
            raise CommandError(f"run {run.pk} has no job")
        outcome = run_here(job_id=job.pk, echo=ConsoleProgress(self.stderr))
        job.refresh_from_db()
        if outcome != "succeeded":
            raise CommandError(f"run {run.pk} {outcome}: {job.error}")
        run.refresh_from_db()
        if run.kind == RunKind.CLASSIFIER:
            overall = run.evaluation.get("by_fst", {})
            groups = run.evaluation.get("by_fst_group", {})
            self.stdout.write(
                f"test accuracy {overall.get('accuracy', 0):.3f}, macro AUROC "
                f"{overall.get('auroc') or float('nan'):.3f}, AUROC gap across FST "
                f"groups {groups.get('auroc_gap') or float('nan'):.3f}"
            )
        else:
            self.stdout.write(f"final loss {run.final_loss:.4f}; tokens: {', '.join(run.tokens)}")
        self.stdout.write(str(run.pk))
        self.stdout.write(artifacts.uri(run.artifacts_dir))
