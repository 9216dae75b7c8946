"""An open review study with many raters, for the rating load test (scripts/load.sh).

Builds what a real study stands on without any diffusion: a finished batch whose accepted
images are procedurally drawn lesions, real controls drawn the same way, dermatologist accounts
`load-derm-1..N` with one known password, and a study over them prepared in the foreground by
the same job a worker would run. Meant for a private, throw-away database.
"""

import io

from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import Role
from accounts.services import user_create
from catalog.models import Dataset, Image, Origin, SourceFormat
from fairskin.imaging.demo import draw_lesion
from fairskin.labels import SEVEN_CLASSES
from fairskin.progress import ConsoleProgress
from generation.models import Batch, BatchState, Sample, Verdict
from jobs.runner import run_here
from review.models import Study
from review.services.study import study_create
from training.models import Run, RunKind

PASSWORD = "load-derm-password"  # noqa: S105 (printed; a throw-away load-test database)
SYNTHETIC_DATASET = "load-synthetic"
REAL_DATASET = "load-real-controls"
DRAW_SIZE = 256  # blinding resizes every image to 512 px; drawing smaller is faster


def _png(diagnosis: str, fst: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    draw_lesion(diagnosis, fst, seed=seed, size=DRAW_SIZE).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


class Command(BaseCommand):
    help = (
        "Seed an open review study for the rating load test: N accepted synthetic images, "
        "real controls, dermatologists load-derm-1..R and the prepared study."
    )

    def add_arguments(self, parser):
        parser.add_argument("--raters", type=int, default=30)
        parser.add_argument(
            "--items",
            type=int,
            default=400,
            help="synthetic images in the study (controls come on top)",
        )
        parser.add_argument("--control-ratio", type=float, default=0.25)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, raters, items, control_ratio, seed, **options):
        if raters < 3:
            raise CommandError("a study needs at least three dermatologists (--raters)")
        if items < 1:
            raise CommandError("--items must be at least 1")
        if Dataset.objects.filter(name__in=[SYNTHETIC_DATASET, REAL_DATASET]).exists():
            raise CommandError("this database already holds a load study; seed a fresh one")
        strata = [(dx.value, fst) for dx in SEVEN_CLASSES for fst in range(1, 7)]
        batch = self._batch(items, strata, seed)
        self._controls(round(items * control_ratio) + len(strata), strata, seed)
        accounts = [
            user_create(
                username=f"load-derm-{i}",
                role=Role.DERMATOLOGIST,
                password=PASSWORD,
                validate=False,
            )
            for i in range(1, raters + 1)
        ]
        study = study_create(
            batch=batch,
            raters=accounts,
            name="load test",
            sample_size=items,
            control_ratio=control_ratio,
            seed=seed,
            enqueue=False,
        )
        job = study.job
        if job is None:  # study_create gives every study a job
            raise CommandError(f"study {study.pk} has no job")
        if run_here(job_id=job.pk, echo=ConsoleProgress(self.stderr)) != "succeeded":
            job.refresh_from_db()
            raise CommandError(f"preparing study {study.pk} failed: {job.error}")
        study = Study.objects.get(pk=study.pk)
        self.stdout.write(
            f"Study {study.pk} is {study.state}: "
            f"{study.plan['items_per_rater']} items per rater, "
            f"{study.plan['synthetic']} synthetic, {study.plan['controls']} real"
        )
        self.stdout.write(f"Raters load-derm-1..{raters}, password: {PASSWORD}")
        self.stdout.write(f"LOAD_STUDY_ID={study.pk}")

    def _batch(self, items: int, strata: list[tuple[str, int]], seed: int) -> Batch:
        dataset = Dataset.objects.create(
            name=SYNTHETIC_DATASET,
            source_format=SourceFormat.SYNTHETIC,
            description="Drawn lesions standing in for a batch.",
        )
        run = Run.objects.create(kind=RunKind.LORA, name="load test", base_model="tiny")
        quotas: dict[str, int] = {}
        for n in range(items):
            dx, fst = strata[n % len(strata)]
            quotas[f"{dx}:{fst}"] = quotas.get(f"{dx}:{fst}", 0) + 1
        batch = Batch.objects.create(
            model_run=run,
            name="load test",
            target=items,
            diagnoses=sorted({dx for dx, _ in strata}),
            size=DRAW_SIZE,
            quotas=quotas,
            state=BatchState.FINISHED,
            dataset=dataset,
        )
        for n in range(items):
            dx, fst = strata[n % len(strata)]
            index = n // len(strata)
            image = Image(
                dataset=dataset,
                origin=Origin.SYNTHETIC,
                diagnosis=dx,
                fst_low=fst,
                fst_high=fst,
                fst_source="dataset",
                source_id=f"{dx}-fst{fst}-{index}",
                file_name=f"{dx}-fst{fst}-{index}.png",
            )
            image.preprocessed.save("s.png", ContentFile(_png(dx, fst, seed * 100_003 + n)))
            Sample.objects.create(
                batch=batch,
                image=image,
                diagnosis=dx,
                fst=fst,
                index=index,
                seed=n,
                prompt=f"a photo of {dx} on FST {fst} skin",
                steps=1,
                guidance=7.5,
                scheduler="ddim",
                clip_embedding=bytes(8),
                inception_features=bytes(8),
                verdict=Verdict.ACCEPTED,
            )
            if n % 50 == 0:
                self.stderr.write(f"drawn {n}/{items} synthetic images")
        return batch

    def _controls(self, count: int, strata: list[tuple[str, int]], seed: int) -> None:
        dataset = Dataset.objects.create(
            name=REAL_DATASET,
            source_format=SourceFormat.CSV,
            description="Drawn lesions standing in for real ones.",
        )
        for n in range(count):
            dx, fst = strata[n % len(strata)]
            image = Image(
                dataset=dataset,
                origin=Origin.REAL,
                diagnosis=dx,
                fst_low=fst,
                fst_high=fst,
                fst_source="dataset",
                source_id=f"real-{n}",
                file_name=f"real-{n}.png",
            )
            image.preprocessed.save(
                "r.png", ContentFile(_png(dx, fst, seed * 100_003 + 50_000 + n))
            )
