"""Writes on generation batches: validate and plan a launch, cancel, resume, a failed preparation.

The batch's plan (quotas, caps, seeds) is fixed at creation (`batch_create`). What happens
after, under the lease of each of the batch's jobs (start, deciding verdicts, planning shards,
finishing), is generation.advance; a resume without failed shards hands over to its
`batch_advance`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.files import image_cache_dir, image_local_path
from catalog.models import Image, Split
from catalog.services import dataset_synthetic_create
from fairskin.diffusion.base_models import BaseModel, BaseModelError, resolve_base_model
from fairskin.errors import ApplicationError
from fairskin.generation.plan import PlanError, plan_batch
from fairskin.generation.reference_images import (
    ReferenceCandidate,
    ReferenceImageError,
    assign_references,
    check_strength,
    load_reference,
)
from fairskin.generation.scoring_config import ScoringConfig, ScoringConfigError
from fairskin.generation.spec import SPEC
from fairskin.labels import Diagnosis
from fairskin.provenance import new_identity
from generation.advance import batch_advance
from generation.models import Batch, BatchState
from generation.selectors import batch_failed_jobs
from jobs.models import TERMINAL_STATES, Job, JobState
from jobs.services import job_cancel, job_create, job_resume
from training.models import Run, RunKind
from training.selectors import run_is_finished


class BatchConfigError(ApplicationError, ValueError):
    """The batch cannot be launched as configured; nothing was created or queued."""


def batch_artifacts_dir(batch: Batch) -> Path:
    """The batch's own folder, named by its identity (batch-<id>-<token>): a batch that re-uses
    an earlier batch's id never finds that batch's reference."""
    root = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "batches"
    return root / (batch.identity or f"batch-{batch.pk}")


def native_size(base_path: str) -> int | None:
    """The native image side of the diffusers folder ``base_path`` (`BaseModel.native_size`),
    or None when its config files cannot tell."""
    try:
        return BaseModel(base_path, "local", base_path).native_size()
    except BaseModelError:
        return None


def _model_diagnoses(run: Run) -> list[str]:
    for r in reversed(run.lineage()):
        chosen = r.selection.get("diagnoses") if r.selection else None
        if chosen:
            return list(chosen)
    return [d.value for d in Diagnosis if d != Diagnosis.OTHER]


def _parse_distribution(raw: dict[Any, Any] | None) -> dict[int, float]:
    if raw is None:
        return {}
    out = {}
    for key, value in raw.items():
        try:
            fst = int(key)
            share = float(value)
        except (TypeError, ValueError) as exc:
            raise BatchConfigError(
                f"the FST distribution maps types 1-6 to shares; got {key!r}: {value!r}"
            ) from exc
        out[fst] = share
    return out


def _check_model(run: Run) -> None:
    if run.kind not in (RunKind.LORA, RunKind.JOINT):
        raise BatchConfigError(
            f"run {run.pk} is a {run.get_kind_display()} run; generate "
            "with a LoRA or joint run (its textual-inversion parent comes "
            "with it)"
        )
    for r in run.lineage():
        if not run_is_finished(run=r):
            raise BatchConfigError(
                f"run {r.pk} in the model's lineage has not succeeded; its artifacts are not ready"
            )
        if not r.artifacts_dir or not Path(r.artifacts_dir).is_dir():
            raise BatchConfigError(f"run {r.pk}'s artifacts folder {r.artifacts_dir!r} is missing")


def batch_create(
    *,
    model_run: Run,
    target: int,
    diagnoses: list[str] | None = None,
    fst_distribution: dict[Any, Any] | None = None,
    overgeneration: float = SPEC.overgeneration.default,
    scheduler: str = SPEC.scheduler.default,
    steps: int = SPEC.steps.default,
    guidance: float = SPEC.guidance.default,
    negative_prompt: str | None = None,
    size: int | None = None,
    seed: int = SPEC.seed.default,
    shard_size: int = SPEC.shard_size.default,
    device_batch: int = SPEC.device_batch.default,
    scoring: dict[str, Any] | None = None,
    filter_percentile: float = SPEC.filter_percentile.default,
    name: str = SPEC.name.default,
    reference: dict[str, Any] | None = None,
    reference_strength: float = SPEC.reference_strength.default,
    user: Any = None,
    enqueue: bool = True,
) -> Batch:
    """Validate and plan a batch, and queue its preparation on the gpu queue.

    Every setting is checked against the generation spec (fairskin.generation.spec), the one
    place its bounds are written. ``filter_percentile`` is the percentile of every calibrated
    threshold the scoring settings do not give one (fairskin.generation.calibration).
    ``negative_prompt`` None is the spec's default, ``size`` None
    (or 0) the model's native size. ``reference`` (`resolve_reference`) makes every candidate
    img2img from its stratum's catalog image at ``reference_strength``; None is text-to-image.
    Raises BatchConfigError (or BrokerUnavailable) with every
    reason; then nothing is created.
    """
    _check_model(model_run)
    diagnoses = list(diagnoses or _model_diagnoses(model_run))
    distribution = _parse_distribution(fst_distribution)
    if negative_prompt is None:
        negative_prompt = SPEC.negative_prompt.default
    values: dict[str, Any] = {
        "target": target,
        "overgeneration": overgeneration,
        "scheduler": scheduler,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "shard_size": shard_size,
        "device_batch": device_batch,
        "negative_prompt": negative_prompt,
        "name": name,
        "filter_percentile": filter_percentile,
    }
    if size:
        values["size"] = size
    problems = SPEC.problems(values)
    if problems:
        raise BatchConfigError("; ".join(problems))
    try:
        plan = plan_batch(target, diagnoses, distribution or None, overgeneration)
    except (PlanError, ValueError) as exc:
        raise BatchConfigError(str(exc)) from exc
    try:
        scoring_config = ScoringConfig.build(scoring, percentile=filter_percentile)
    except ScoringConfigError as exc:
        raise BatchConfigError(f"scoring: {exc}") from exc
    try:
        base = resolve_base_model(
            model_run.base_model, cache_dir=settings.FAIRSKIN_MODEL_CACHE, build=False
        )
    except BaseModelError as exc:
        raise BatchConfigError(str(exc)) from exc
    if not size:
        size = (native_size(base.path) if base.source != "hub" else None) or SPEC.size.default
        problem = SPEC.size.problem(size)
        if problem is not None:
            raise BatchConfigError(f"{problem} (the model's native size)")
    references = (
        resolve_reference(
            reference,
            strength=reference_strength,
            strata=[(e.stratum.diagnosis, e.stratum.fst) for e in plan],
            size=size,
            steps=steps,
            seed=seed,
        )
        if reference
        else {}
    )

    with transaction.atomic():
        batch = Batch.objects.create(
            model_run=model_run,
            name=name,
            target=target,
            diagnoses=diagnoses,
            fst_distribution={str(k): v for k, v in (distribution or {}).items()}
            or Batch._meta.get_field("fst_distribution").get_default(),
            overgeneration=overgeneration,
            scheduler=scheduler,
            steps=steps,
            guidance=guidance,
            negative_prompt=negative_prompt,
            size=size,
            seed=seed,
            shard_size=shard_size,
            device_batch=device_batch,
            scoring=scoring_config.to_dict(),
            filter_percentile=filter_percentile,
            reference=references,
            quotas=plan.quotas_json(),
            planned={},
            reproducibility=pixel_dependence(device_batch),
            created_by=user if getattr(user, "pk", None) else None,
        )
        while True:  # a folder no earlier batch left behind
            batch.identity = new_identity("batch", batch.pk)
            batch.artifacts_dir = str(batch_artifacts_dir(batch))
            if not Path(batch.artifacts_dir).exists():
                break
        batch.dataset = dataset_synthetic_create(
            name=f"synthetic-batch-{batch.pk}",
            licence=f"generated by FairSkin batch {batch.pk} from run {model_run.pk}",
            description=f"Candidates of generation batch {batch.pk}. Only accepted images "
            "count; see the batch page.",
            created_by=batch.created_by,
        )
        batch.job = job_create(
            kind="generation.prepare",
            queue="gpu",
            params={"batch_id": batch.pk},
            title=f"Batch {batch.pk}: reference features" + (f" ({name})" if name else ""),
            launched_by=user,
            enqueue=enqueue,
        )
        batch.save(update_fields=["identity", "artifacts_dir", "dataset", "job"])
    return batch


MAX_REFERENCES = 500
SELECTION_KEYS = ("dataset", "diagnosis", "fst", "split")


def _reference_images(reference: dict[str, Any]) -> list[Image]:
    """The catalog images a batch's reference request names: {"image_ids": [...]}, or a
    selection of real images by dataset, diagnosis, FST (one type, fst_low = fst_high) and
    split; a selection without a split leaves the test split out."""
    unknown = sorted(set(reference) - {"image_ids", *SELECTION_KEYS})
    if unknown or ("image_ids" in reference) == bool(set(reference) & set(SELECTION_KEYS)):
        raise BatchConfigError(
            'reference: give either {"image_ids": [...]} or a catalog selection with keys '
            f"{', '.join(SELECTION_KEYS)}" + (f"; unknown keys {unknown}" if unknown else "")
        )
    if "image_ids" in reference:
        ids = reference["image_ids"]
        if not isinstance(ids, list) or not ids or not all(is_whole_id(i) for i in ids):
            raise BatchConfigError(f"reference image_ids must be a list of image ids, got {ids!r}")
        found = {i.pk: i for i in Image.objects.filter(pk__in=ids)}
        absent = [i for i in ids if i not in found]
        if absent:
            raise BatchConfigError(f"reference images not found: {absent}")
        return [found[i] for i in dict.fromkeys(ids)]
    images = Image.objects.filter(origin="real")
    as_list = {k: v if isinstance(v, list) else [v] for k, v in reference.items()}
    if "dataset" in as_list:
        images = images.filter(dataset__name__in=as_list["dataset"])
    if "diagnosis" in as_list:
        images = images.filter(diagnosis__in=as_list["diagnosis"])
    if "fst" in as_list:
        images = images.filter(fst_low__in=as_list["fst"], fst_high__in=as_list["fst"])
    if "split" in as_list:
        images = images.filter(split__in=as_list["split"])
    else:
        images = images.exclude(split=Split.TEST)
    chosen = list(images.order_by("pk")[: MAX_REFERENCES + 1])
    if not chosen:
        raise BatchConfigError(f"the reference selection {reference} matches no real image")
    if len(chosen) > MAX_REFERENCES:
        raise BatchConfigError(
            f"the reference selection {reference} matches more than {MAX_REFERENCES} images; "
            "narrow it"
        )
    return chosen


def is_whole_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def resolve_reference(
    reference: dict[str, Any],
    *,
    strength: float,
    strata: list[tuple[str, int]],
    size: int,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """A batch's ``reference`` record: the request, the image ids it resolved to, the strength
    and each stratum's image (`assign_references`). Refused with every bad image named: not
    found, of a test split (a leak into evaluation), without a readable square preprocessed
    file at least ``size`` wide, or no reference of a stratum's diagnosis."""
    if not isinstance(reference, dict):
        raise BatchConfigError(f"reference must be a mapping, got {reference!r}")
    problem = check_strength(strength, steps)
    if problem:
        raise BatchConfigError(problem)
    images = _reference_images(reference)
    problems = []
    cache = image_cache_dir()
    for image in images:
        if image.split == Split.TEST:
            problems.append(
                f"reference image {image.pk} is in the test split of {image.dataset.name}: "
                "generating from it would leak it into evaluation"
            )
        elif not image.preprocessed or image.missing_file:
            problems.append(f"reference image {image.pk} has no preprocessed file")
        else:
            try:
                load_reference(image_local_path(image, cache), size, image_id=image.pk)
            except (ReferenceImageError, OSError) as exc:
                problems.append(str(exc))
    if problems:
        raise BatchConfigError("; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    known = [
        ReferenceCandidate(i.pk, i.diagnosis, i.fst_low if i.fst_low == i.fst_high else None)
        for i in images
    ]
    try:
        by_stratum = assign_references(strata, known, seed)
    except ReferenceImageError as exc:
        raise BatchConfigError(str(exc)) from exc
    return {
        "request": reference,
        "image_ids": [i.pk for i in images],
        "strength": strength,
        "strata": by_stratum,
    }


def reference_rows(batch: Batch, stratum_key: str, n: int) -> tuple[int | None, Any]:
    """The stratum's reference image id and its pixels as ``n`` identical float rows
    (n, 3, size, size) in [0, 1] for img2img; (None, None) for a text-to-image batch."""
    if not batch.reference:
        return None, None
    import torch

    image_id = int(batch.reference["strata"][stratum_key])
    image = Image.objects.select_related("dataset").get(pk=image_id)
    pixels = load_reference(
        image_local_path(image, image_cache_dir()), batch.size, image_id=image_id
    )
    rows = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)
    return image_id, rows[None].repeat(n, 1, 1, 1)


def publish_reference(staging: Path) -> None:
    """Move a preparing attempt's scoring reference into place (inside the fenced hand-over)."""
    folder = staging.parent
    target = folder / "reference"
    if target.exists():  # left by an attempt that died between publishing and committing
        shutil.rmtree(target)
    (staging / "reference").rename(target)
    for leftover in folder.glob(".prepare-attempt-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def pixel_dependence(micro_batch: int) -> dict[str, Any]:
    """What a batch's pixels depend on, as recorded at creation; machines are added by shards."""
    return {
        "micro_batch": micro_batch,
        "environments": [],
        "note": "A candidate's pixels (and its PNG's sha256) are a function of the batch's "
        "seed and settings, its micro-batch size and the machine that generated "
        "it (device, dtype, torch and diffusers versions, CPU threads), not of "
        "shard size or which shard generated it. Candidates generated on "
        "different machines or with another micro-batch size can differ by "
        "rounding in a few pixel values.",
    }


def batch_preparation_failed(*, job_id: int, error: str) -> None:
    """The preparing job failed (its worker's error, or the sweep gave up): the batch fails
    with it, unless it already moved on."""
    Batch.objects.filter(job_id=job_id, state=BatchState.PREPARING).update(
        state=BatchState.FAILED,
        error=f"preparing the reference failed: {error}",
        finished_at=timezone.now(),
    )


def batch_cancel(*, batch: Batch, user: Any = None) -> Batch:
    """Stop handing out work and cancel every unfinished job of the batch."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update(of=("self",)).select_related("job").get(pk=batch.pk)
        if not batch.is_active:
            raise BatchConfigError(
                f"batch {batch.pk} is {batch.get_state_display().lower()}; "
                "only a running batch can be cancelled"
            )
        jobs = [batch.job] if batch.job else []
        jobs += list(Job.objects.filter(parent=batch.job))
        for job in jobs:
            if job.state not in TERMINAL_STATES:
                job_cancel(job=job, by=user)
        batch.state = BatchState.CANCELLED
        batch.finished_at = timezone.now()
        batch.save(update_fields=["state", "finished_at"])
    return batch


def batch_resume(*, batch: Batch, user: Any = None) -> Batch:
    """Pick a batch up where it stopped: a cancelled or failed batch, or a running one with a
    failed shard. Stored candidates are kept; a re-run shard skips the seeds it already has."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update(of=("self",)).select_related("job").get(pk=batch.pk)
        stopped = batch.state in (BatchState.CANCELLED, BatchState.FAILED)
        failed = list(batch_failed_jobs(batch=batch)) if batch.job else []
        if not stopped:
            failed = [j for j in failed if j.state == JobState.FAILED]
        if not stopped and not failed:
            raise BatchConfigError(
                f"batch {batch.pk} is {batch.get_state_display().lower()} "
                "with no failed shard; there is nothing to resume"
            )
        batch.error = ""
        batch.finished_at = None
        if batch.job is None:  # a launch always creates the job; a hand-made row may not
            raise BatchConfigError(f"batch {batch.pk} has no preparation job to resume")
        if batch.job.state != JobState.SUCCEEDED:
            batch.state = BatchState.PREPARING
            batch.save(update_fields=["state", "error", "finished_at"])
            job_resume(job=batch.job, by=user)
            return batch
        report = next((j for j in failed if j.kind == "generation.report"), None)
        batch.state = BatchState.REPORTING if report else BatchState.GENERATING
        batch.save(update_fields=["state", "error", "finished_at"])
        for job in failed:
            if job.kind == "generation.shard" or job is report:
                job_resume(job=job, by=user)
    if not failed:
        batch_advance(batch_id=batch.pk)
    return batch
