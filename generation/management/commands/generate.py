import json

from django.core.management.base import BaseCommand, CommandError

from fairskin.config_types import SettingsError, field_names, parse_settings
from fairskin.generation.hard_example import HardExampleSettings
from fairskin.generation.scoring_config import ScoringConfig
from fairskin.generation.spec import SPEC
from fairskin.progress import ConsoleProgress
from generation.hard_examples import hard_example_batch_create, hard_example_plan
from generation.models import Batch, BatchState
from generation.selectors import batch_strata, model_run_get
from generation.services import BatchConfigError, batch_create
from jobs.broker import BrokerUnavailable
from jobs.runner import ForegroundStopped, drain_here


def _distribution(text: str) -> dict[int, float]:
    """'5=0.5,6=0.5' -> {5: 0.5, 6: 0.5}"""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        fst, sep, share = part.partition("=")
        try:
            key, value = int(fst), float(share)
        except ValueError:
            sep = ""
        if not sep:
            raise CommandError(
                f"--fst-distribution takes FST=SHARE pairs such as "
                f"'5=0.5,6=0.5'; could not read {part!r}"
            )
        if key in out:
            raise CommandError(f"--fst-distribution gives FST {key} more than once")
        out[key] = value
    return out


def _scoring(items: list[str]) -> dict[str, object]:
    try:
        return parse_settings(items, known=field_names(ScoringConfig), noun="scoring setting")
    except SettingsError as exc:
        raise CommandError(f"{exc}\nNothing was queued.") from exc


def _reference(ids: list[int], selection: str | None) -> dict[str, object] | None:
    reference: dict[str, object] = {"image_ids": ids} if ids else {}
    if selection:
        try:
            parsed = json.loads(selection)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--reference-selection is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise CommandError(f"--reference-selection must be a JSON object, got {selection}")
        reference |= parsed
    return reference or None


class Command(BaseCommand):
    help = (
        "Generate a balanced batch of synthetic images with a LoRA or joint run. Queued on "
        "the gpu queue; with --wait it runs here in the foreground with a progress bar. The "
        "last line printed is the batch id."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, required=True, help="LoRA or joint run id")
        parser.add_argument(
            "--count", type=int, required=True, help="accepted images wanted over all strata"
        )
        parser.add_argument(
            "--diagnosis",
            action="append",
            default=[],
            dest="diagnoses",
            help="diagnosis code (repeatable; default: the model's)",
        )
        default_mix = ", ".join(f"{fst}={share:g}" for fst, share in SPEC.fst_distribution.items())
        parser.add_argument(
            "--fst-distribution", default="", help=f"e.g. '5=0.5,6=0.5' (default {default_mix})"
        )
        parser.add_argument(
            "--overgeneration",
            type=float,
            default=SPEC.overgeneration.default,
            help="candidate cap per stratum as a multiple of its quota (default %(default)s)",
        )
        parser.add_argument(
            "--scheduler", default=SPEC.scheduler.default, choices=list(SPEC.scheduler.choices)
        )
        parser.add_argument(
            "--steps", type=int, default=SPEC.steps.default, help="default %(default)s"
        )
        parser.add_argument(
            "--guidance", type=float, default=SPEC.guidance.default, help="default %(default)s"
        )
        parser.add_argument(
            "--negative-prompt", default=None, help=f"default '{SPEC.negative_prompt.default}'"
        )
        parser.add_argument("--size", type=int, help="image side (default: the model's)")
        parser.add_argument("--seed", type=int, default=SPEC.seed.default)
        parser.add_argument(
            "--shard-size",
            type=int,
            default=SPEC.shard_size.default,
            help="candidates per shard job (default %(default)s)",
        )
        parser.add_argument(
            "--device-batch",
            type=int,
            default=SPEC.device_batch.default,
            help="images per device pass, which the pixels depend on (default %(default)s)",
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            dest="scoring",
            metavar="KEY=VALUE",
            help="a scoring setting, e.g. confidence=0.7, "
            'fid=30 (absolute), fid=\'{"mode": "calibrated", "percentile": 99}\' or '
            "apply_uncalibrated='[\"duplicate\"]' (repeatable)",
        )
        parser.add_argument(
            "--filter-percentile",
            type=float,
            default=SPEC.filter_percentile.default,
            help="share (%%) of held-out real images each calibrated filter threshold lets "
            "pass (default %(default)s)",
        )
        parser.add_argument(
            "--reference-image",
            type=int,
            action="append",
            default=[],
            dest="reference_images",
            metavar="ID",
            help="generate img2img from this catalog image (repeatable; each stratum draws "
            "one of its diagnosis, see docs/validation/reference-images.md)",
        )
        parser.add_argument(
            "--reference-selection",
            metavar="JSON",
            help='reference images as a catalog selection, e.g. \'{"dataset": "isic", '
            '"diagnosis": "MEL", "fst": 6}\' (keys dataset, diagnosis, fst, split)',
        )
        parser.add_argument(
            "--reference-strength",
            type=float,
            default=SPEC.reference_strength.default,
            help="how far each output moves from its reference, in (0, 1] (default %(default)s)",
        )
        parser.add_argument(
            "--reference-mode",
            default=SPEC.reference_mode.default,
            choices=list(SPEC.reference_mode.choices),
            help="img2img from the reference's pixels, or image_prompt: its CLIP embedding "
            "through the model's image-prompt adapter or FAIRSKIN_IP_ADAPTER_DIR's "
            "(default %(default)s)",
        )
        parser.add_argument(
            "--image-prompt-scale",
            type=float,
            default=SPEC.image_prompt_scale.default,
            help="the image prompt's weight beside the text (default %(default)s)",
        )
        parser.add_argument(
            "--label-scale",
            type=float,
            default=SPEC.label_scale.default,
            help="class-label guidance for a model trained with label conditioning: 0 leaves "
            "the labels out, above 0 guides each image to its diagnosis and skin type "
            "(a third UNet pass per step; default %(default)s)",
        )
        parser.add_argument("--name", default=SPEC.name.default)
        parser.add_argument(
            "--wait", action="store_true", help="run in the foreground with a progress bar"
        )
        hard = parser.add_argument_group(
            "hard examples", "quotas from a classifier run's validation errors per stratum"
        )
        defaults = HardExampleSettings()
        hard.add_argument(
            "--hard-examples-from",
            type=int,
            metavar="RUN",
            help="plan the quotas from this classifier run's validation errors (not with "
            "--diagnosis or --fst-distribution; see docs/validation/hard-examples.md)",
        )
        hard.add_argument(
            "--floor",
            type=int,
            default=defaults.floor,
            help="images every stratum gets (default %(default)s)",
        )
        hard.add_argument(
            "--cap-share",
            type=float,
            default=defaults.cap_share,
            help="the most one stratum may get, as a share of --count (default %(default)s)",
        )
        hard.add_argument(
            "--min-images",
            type=int,
            default=defaults.min_images,
            help="validation images a stratum needs to be judged (default %(default)s)",
        )
        hard.add_argument(
            "--dry-run", action="store_true", help="print the plan and its reasons only"
        )

    def handle(
        self,
        *args,
        model,
        count,
        diagnoses,
        fst_distribution,
        overgeneration,
        scheduler,
        steps,
        guidance,
        negative_prompt,
        size,
        seed,
        shard_size,
        device_batch,
        scoring,
        filter_percentile,
        name,
        wait,
        reference_images,
        reference_selection,
        reference_strength,
        label_scale,
        reference_mode,
        image_prompt_scale,
        **options,
    ):
        run = model_run_get(run_id=model)
        if run is None:
            raise CommandError(f"no run {model}")
        if options["hard_examples_from"] is not None:
            if diagnoses or fst_distribution:
                raise CommandError(
                    "--hard-examples-from sets the strata: drop --diagnosis and --fst-distribution"
                )
            create, strata = self._hard_examples(options, run, count), {}
            if options["dry_run"]:
                self.stdout.write("dry run: nothing was queued")
                return
        elif options["dry_run"]:
            raise CommandError("--dry-run goes with --hard-examples-from")
        else:
            create = batch_create
            strata = {
                "diagnoses": diagnoses or None,
                "fst_distribution": _distribution(fst_distribution) or None,
            }
        try:
            batch = create(
                model_run=run,
                target=count,
                **strata,
                overgeneration=overgeneration,
                scheduler=scheduler,
                steps=steps,
                guidance=guidance,
                negative_prompt=negative_prompt,
                size=size,
                seed=seed,
                shard_size=shard_size,
                device_batch=device_batch,
                scoring=_scoring(scoring),
                filter_percentile=filter_percentile,
                name=name,
                reference=_reference(reference_images, reference_selection),
                reference_strength=reference_strength,
                label_scale=label_scale,
                reference_mode=reference_mode,
                image_prompt_scale=image_prompt_scale,
                enqueue=not wait,
            )
        except BatchConfigError as exc:
            raise CommandError(f"{exc}\nNothing was queued.") from exc
        except BrokerUnavailable as exc:
            raise CommandError(f"{exc} (use --wait to generate here)") from exc
        self.stdout.write(
            f"batch {batch.pk}: {batch.target} images over {len(batch.quotas)} "
            f"strata with run {run.pk}, {batch.size}px, {batch.scheduler} "
            f"{batch.steps} steps"
        )
        if not wait:
            self.stdout.write(f"queued as job {batch.job_id} on the gpu queue")
            self.stdout.write(str(batch.pk))
            return
        if batch.job_id is None:  # batch_create always makes one
            raise CommandError(f"batch {batch.pk} has no preparation job")
        try:
            drain_here(
                root_id=batch.job_id,
                echo=ConsoleProgress(self.stderr),
                active=lambda: Batch.objects.get(pk=batch.pk).is_active,
            )
        except ForegroundStopped as exc:
            raise CommandError(str(exc)) from exc
        except LookupError as exc:
            raise CommandError(
                f"batch {batch.pk} is still running but {exc}; see its page"
            ) from exc
        batch = Batch.objects.get(pk=batch.pk)
        for row in batch_strata(batch=batch):
            short = f", short {row['shortfall']}" if row["shortfall"] else ""
            self.stdout.write(
                f"  {row['diagnosis']} FST {row['fst']}: {row['accepted']}/"
                f"{row['quota']} accepted of {row['generated']} generated{short}"
            )
        if batch.state != BatchState.FINISHED:
            raise CommandError(f"batch {batch.pk} {batch.state}: {batch.error}")
        self.stdout.write(
            f"accepted {batch.report.get('accepted')}, shortfall {batch.report.get('shortfall')}"
        )
        self.stdout.write(str(batch.pk))

    def _hard_examples(self, options, model_run, count):
        """Print the plan of --hard-examples-from and return the launcher of that plan."""
        run_id = options["hard_examples_from"]
        classifier = model_run_get(run_id=run_id)
        if classifier is None:
            raise CommandError(f"no run {run_id}")
        settings = HardExampleSettings(
            floor=options["floor"],
            cap_share=options["cap_share"],
            min_images=options["min_images"],
        )
        try:
            plan = hard_example_plan(
                classifier_run=classifier, model_run=model_run, target=count, settings=settings
            )
        except BatchConfigError as exc:
            raise CommandError(f"{exc}\nNothing was queued.") from exc
        self.stdout.write(f"hard examples from classifier run {classifier.pk}: {plan.summary}")
        for row in plan.rows:
            self.stdout.write(f"  {row.reason}")

        def launch(**kwargs):
            return hard_example_batch_create(
                classifier_run=classifier,
                settings=settings,
                expected_quotas=plan.quotas(),
                **kwargs,
            )

        return launch
