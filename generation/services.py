"""Writes on generation batches: validate and plan a launch, cancel, resume, a failed preparation.

The batch's plan (quotas, caps, seeds) is fixed at creation (`batch_create`). What happens
after, under the lease of each of the batch's jobs (start, deciding verdicts, planning shards,
finishing), is generation.advance; a resume without failed shards hands over to its
`batch_advance`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.services import dataset_synthetic_create
from fairskin.diffusion.base_models import BaseModel, BaseModelError, resolve_base_model
from fairskin.generation.plan import Plan, PlanError, check_quotas, plan_batch
from fairskin.generation.scoring_config import ScoringConfig, ScoringConfigError
from fairskin.generation.spec import SPEC
from fairskin.labels import Diagnosis
from fairskin.provenance import new_identity
from fairskin.store.errors import StoreError
from generation.advance import batch_advance
from generation.conditioning import check_image_prompt, check_label_guidance, resolve_reference
from generation.errors import BatchConfigError as BatchConfigError
from generation.models import Batch, BatchState
from generation.selectors import batch_failed_jobs
from jobs import artifacts
from jobs.models import TERMINAL_STATES, Job, JobState
from jobs.services import job_cancel, job_create, job_resume
from training.models import Run, RunKind
from training.selectors import run_is_finished


def batch_artifacts_key(batch: Batch) -> str:
    """The batch's store key, named by its identity (batches/batch-<id>-<token>): a batch that
    re-uses an earlier batch's id never finds that batch's reference."""
    return f"batches/{batch.identity or f'batch-{batch.pk}'}"


def native_size(base_path: str) -> int | None:
    """The native image side of the diffusers folder ``base_path`` (`BaseModel.native_size`),
    or None when its config files cannot tell."""
    try:
        return BaseModel(base_path, "local", base_path).native_size()
    except BaseModelError:
        return None


def model_diagnoses(run: Run) -> list[str]:
    """The diagnoses a model run was trained on (its own selection or its lineage's); all
    seven classes when none names them."""
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
        try:
            in_store = artifacts.published(r.artifacts_dir)
        except StoreError as exc:
            raise BatchConfigError(f"run {r.pk}'s artifacts cannot be read: {exc}") from exc
        if not in_store:
            raise BatchConfigError(
                f"run {r.pk}'s artifacts ({r.artifacts_dir or 'none recorded'}) are missing"
                " from the artifact store"
            )


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
    reference_mode: str = SPEC.reference_mode.default,
    image_prompt_scale: float = SPEC.image_prompt_scale.default,
    label_scale: float = SPEC.label_scale.default,
    quotas: dict[str, Any] | None = None,
    origin: dict[str, Any] | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> Batch:
    """Validate and plan a batch, and queue its preparation on the gpu queue.

    Every setting is checked against the generation spec (fairskin.generation.spec), the one
    place its bounds are written. ``filter_percentile`` is the percentile of every calibrated
    threshold the scoring settings do not give one (fairskin.generation.calibration).
    ``negative_prompt`` None is the spec's default, ``size`` None
    (or 0) the model's native size. ``reference`` (`resolve_reference`) makes every candidate
    img2img from its stratum's catalog image at ``reference_strength``, or with
    ``reference_mode`` "image_prompt" conditions on it through an image-prompt adapter at
    ``image_prompt_scale`` (`check_image_prompt`); None is text-to-image.
    ``label_scale`` above 0 guides a model trained with label conditioning towards each
    candidate's diagnosis and skin type (`check_label_guidance`).
    ``quotas`` ({"MEL:6": 14}, summing to ``target``) replace the plan from diagnoses and
    the FST distribution (give neither with them); ``origin`` records where they came from
    (generation.hard_examples). Raises BatchConfigError (or BrokerUnavailable) with every
    reason; then nothing is created.
    """
    _check_model(model_run)
    if quotas is not None and (diagnoses or fst_distribution):
        raise BatchConfigError("explicit quotas come without diagnoses or an FST distribution")
    diagnoses = list(diagnoses or model_diagnoses(model_run))
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
        "label_scale": label_scale,
        "reference_mode": reference_mode,
        "image_prompt_scale": image_prompt_scale,
    }
    if size:
        values["size"] = size
    problems = SPEC.problems(values)
    if problems:
        raise BatchConfigError("; ".join(problems))
    try:
        if quotas is not None:
            plan = Plan.build(check_quotas(quotas, target), overgeneration)
            diagnoses = list(dict.fromkeys(e.stratum.diagnosis for e in plan))
        else:
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
            mode=reference_mode,
            strata=[(e.stratum.diagnosis, e.stratum.fst) for e in plan],
            size=size,
            steps=steps,
            seed=seed,
        )
        if reference
        else {}
    )
    if reference_mode == "image_prompt":
        if not references:
            raise BatchConfigError("the image_prompt reference mode needs reference images")
        references["image_prompt"] = check_image_prompt(model_run, base, scale=image_prompt_scale)
    check_label_guidance(model_run, label_scale, references=bool(references), base=base)

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
            label_scale=label_scale,
            quotas=plan.quotas_json(),
            origin=origin or {},
            planned={},
            reproducibility=pixel_dependence(device_batch),
            created_by=user if getattr(user, "pk", None) else None,
        )
        while True:  # a folder no earlier batch left behind
            batch.identity = new_identity("batch", batch.pk)
            batch.artifacts_dir = batch_artifacts_key(batch)
            if not batch.folder.exists():
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


def publish_reference(batch: Batch, staging: Path) -> None:
    """Move a preparing attempt's scoring reference into place and publish it to the store,
    manifest last (inside the fenced hand-over, so a stalled attempt never overwrites it)."""
    folder = staging.parent
    target = folder / "reference"
    if target.exists():  # left by an attempt that died between publishing and committing
        shutil.rmtree(target)
    (staging / "reference").rename(target)
    for leftover in folder.glob(".prepare-attempt-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    artifacts.publish(batch.artifacts_dir)


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


def batches_artifacts_upload(*, dry_run: bool = False) -> Iterator[tuple[str, bool]]:
    """Upload every batch's folder (its scoring reference) into the artifact store and record
    its key (`manage.py upload_artifacts`)."""
    for batch in Batch.objects.exclude(artifacts_dir="").order_by("pk"):
        key, message, stored = artifacts.upload_reference(
            batch.artifacts_dir, "batches", dry_run=dry_run
        )
        if stored and not dry_run and key != batch.artifacts_dir:
            Batch.objects.filter(pk=batch.pk).update(artifacts_dir=key)
        yield f"batch {batch.pk}: {message}", stored
