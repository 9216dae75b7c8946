"""Writes on generation batches: validate and plan, advance after each shard, cancel, report.

The batch's plan (quotas, caps, seeds) is fixed at creation. Work is handed out in shards:
first every stratum's quota worth of candidates, then, as shards finish and acceptance is
decided in seed order, more candidates for the strata still short, sized by their acceptance
rate so far and never past their cap. `batch_advance` is the only place that decides verdicts
and plans shards; it runs under a row lock on the batch and is idempotent, so a shard that is
re-run after its worker died changes nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from catalog.services import dataset_synthetic_create
from fairskin.diffusion.base_models import BaseModel, BaseModelError, resolve_base_model
from fairskin.errors import ApplicationError
from fairskin.generation.plan import (
    CandidateRange,
    PlanError,
    cut_into_shards,
    decide_stratum,
    plan_batch,
)
from fairskin.generation.scoring_config import ScoringConfig, ScoringConfigError
from fairskin.generation.similarity import NearDuplicateCheck
from fairskin.generation.spec import SPEC
from fairskin.labels import Diagnosis
from generation.models import Batch, BatchState, Sample, Verdict
from generation.selectors import batch_failed_jobs
from jobs.models import TERMINAL_STATES, Job, JobState
from jobs.registry import LeaseHolder
from jobs.services import job_cancel, job_create, job_resume
from training.models import Run, RunKind
from training.selectors import run_is_finished

# The lowest acceptance rate used to size a top-up; below it a stratum tops up in larger steps
# rather than one shard per rejected image.
MIN_RATE_ESTIMATE = 0.25


class BatchConfigError(ApplicationError, ValueError):
    """The batch cannot be launched as configured; nothing was created or queued."""


def batch_artifacts_dir(batch: Batch) -> Path:
    return Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "batches" / f"batch-{batch.pk}"


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
    name: str = SPEC.name.default,
    user: Any = None,
    enqueue: bool = True,
) -> Batch:
    """Validate and plan a batch, and queue its preparation on the gpu queue.

    Every setting is checked against the generation spec (fairskin.generation.spec), the one
    place its bounds are written. ``negative_prompt`` None is the spec's default, ``size`` None
    (or 0) the model's native size. Raises BatchConfigError (or BrokerUnavailable) with every
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
        scoring_config = ScoringConfig.build(scoring)
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
            quotas=plan.quotas_json(),
            planned={},
            reproducibility=pixel_dependence(device_batch),
            created_by=user if getattr(user, "pk", None) else None,
        )
        batch.artifacts_dir = str(batch_artifacts_dir(batch))
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
        batch.save(update_fields=["artifacts_dir", "dataset", "job"])
    return batch


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


def batch_record_environment(
    *, batch_id: int, environment: dict[str, Any], lease: LeaseHolder | None = None
) -> bool:
    """Add the machine a shard generates on to the batch's reproducibility record, once;
    True if it was new. More than one means candidates may differ by rounding between them."""
    with _held(lease):
        batch = Batch.objects.select_for_update(of=("self",)).get(pk=batch_id)
        record = dict(batch.reproducibility)  # empty for batches older than this record
        environments = record.setdefault("environments", [])
        if environment in environments:
            return False
        environments.append(environment)
        batch.reproducibility = record
        batch.save(update_fields=["reproducibility"])
    return True


def _duplicate_predicate(batch: Batch) -> NearDuplicateCheck:
    """The batch's near-duplicate check, applied as its CLIP network's calibration says."""
    clip = batch.provenance.get("clip", {})
    return NearDuplicateCheck.for_batch(
        ScoringConfig.build(batch.scoring), clip_calibrated=bool(clip.get("calibrated"))
    )


def _decide(batch: Batch) -> dict[str, bool]:
    """Re-decide the strata not finished yet; returns stratum key -> complete."""
    is_duplicate = _duplicate_predicate(batch)
    complete: dict[str, bool] = {}
    changed: list[Sample] = []
    for cell in batch.plan():
        dx, fst = cell.stratum
        key = cell.stratum.key
        samples = list(
            Sample.objects.filter(batch=batch, diagnosis=dx, fst=fst)
            .only("id", "index", "failed_checks", "clip_embedding", "verdict", "reasons")
            .order_by("index")
        )
        if key in batch.outcomes:
            # Verdicts up to the quota are final; anything stored later is surplus.
            for s in samples:
                if s.verdict == Verdict.PENDING:
                    s.verdict, s.reasons = Verdict.SURPLUS, ["quota met by earlier seeds"]
                    changed.append(s)
            complete[key] = True
            continue
        scored = {
            s.index: (
                tuple(s.failed_checks),
                np.frombuffer(bytes(s.clip_embedding), dtype=np.float32),
            )
            for s in samples
        }
        decision = decide_stratum(cell.quota, cell.cap, scored, is_duplicate=is_duplicate)
        verdicts = {v.index: v for v in decision.verdicts}
        for s in samples:
            v = verdicts.get(s.index)
            if v is not None:
                verdict = Verdict.ACCEPTED if v.accepted else Verdict.REJECTED
                reasons = list(v.reasons)
            elif decision.complete:
                verdict, reasons = Verdict.SURPLUS, ["quota met by earlier seeds"]
            else:
                verdict, reasons = Verdict.PENDING, []
            if (s.verdict, s.reasons) != (verdict, reasons):
                s.verdict, s.reasons = verdict, reasons
                changed.append(s)
        complete[key] = decision.complete
        if decision.complete:
            batch.outcomes[key] = {
                "accepted": len(decision.accepted),
                "shortfall": decision.shortfall,
            }
    Sample.objects.bulk_update(changed, ["verdict", "reasons"], batch_size=500)
    return complete


def _open_shards(batch: Batch, *, excluding: int | None = None) -> QuerySet[Job]:
    shards = Job.objects.filter(parent=batch.job, kind="generation.shard").exclude(
        state__in=TERMINAL_STATES
    )
    return shards.exclude(pk=excluding) if excluding is not None else shards


def _held(lease: LeaseHolder | None) -> AbstractContextManager[None]:
    """The lease's fenced transaction, or a plain one for a user's action (resume)."""
    return lease.hold() if lease is not None else transaction.atomic()


def batch_advance(
    *, batch_id: int, current_job: int | None = None, lease: LeaseHolder | None = None
) -> dict[str, Any]:
    """Decide what can be decided, then queue the next shards or the batch report.

    Called when the reference is ready and whenever a shard has stored its candidates, under
    that job's lease. The follow-up jobs are written in the same transaction and sent through
    the outbox, so a broker outage here delays them but cannot fail the finished shard.
    """
    with _held(lease):
        batch = Batch.objects.select_for_update(of=("self",)).select_related("job").get(pk=batch_id)
        if batch.state != BatchState.GENERATING:
            return {"state": batch.state}
        complete = _decide(batch)
        counts = (
            Sample.objects.filter(batch=batch)
            .values("diagnosis", "fst")
            .annotate(
                n=Count("id"),
                accepted=Count("id", filter=Q(verdict=Verdict.ACCEPTED)),
                decided=Count("id", filter=~Q(verdict=Verdict.PENDING)),
            )
            .order_by()
        )
        stored = {(r["diagnosis"], r["fst"]): r for r in counts}
        work: list[CandidateRange] = []
        for cell in batch.plan():
            key = cell.stratum.key
            if complete[key]:
                continue
            planned = batch.planned.get(key, 0)
            row = stored.get(cell.stratum, {"n": 0, "accepted": 0, "decided": 0})
            if row["n"] < planned:
                continue  # candidates of this stratum are still being generated
            if planned == 0:
                more = cell.quota
            else:
                rate = row["accepted"] / row["decided"] if row["decided"] else 1.0
                more = math.ceil((cell.quota - row["accepted"]) / max(rate, MIN_RATE_ESTIMATE))
            stop = min(cell.cap, planned + max(1, more))
            if stop > planned:
                work.append(CandidateRange(*cell.stratum, planned, stop))
                batch.planned[key] = stop
        shards = cut_into_shards(work, batch.shard_size)
        for n, ranges in enumerate(shards):
            job_create(
                kind="generation.shard",
                queue="gpu",
                parent=batch.job,
                params={"batch_id": batch.pk, "ranges": [list(r) for r in ranges]},
                title=f"Batch {batch.pk}: shard of {sum(r.size for r in ranges)} "
                f"candidates ({n + 1}/{len(shards)})",
                launched_by=batch.created_by,
                require_broker=False,
            )
        finished = all(complete.values())
        if finished:
            for job in _open_shards(batch, excluding=current_job):
                job_cancel(job=job)  # surplus work for strata that are already complete
            batch.state = BatchState.REPORTING
            job_create(
                kind="generation.report",
                queue="cpu",
                parent=batch.job,
                params={"batch_id": batch.pk},
                title=f"Batch {batch.pk}: metrics",
                launched_by=batch.created_by,
                require_broker=False,
            )
        batch.save(update_fields=["planned", "outcomes", "state"])
    return {
        "state": batch.state,
        "new_shards": len(shards),
        "complete": sum(complete.values()),
        "strata": len(complete),
    }


def batch_start(
    *,
    batch_id: int,
    provenance: dict[str, Any],
    lease: LeaseHolder | None = None,
    publish: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The reference is ready: publish it, record the extractors and hand out the first
    shards, all under the preparing job's lease (a stalled attempt changes nothing)."""
    with _held(lease):
        batch = Batch.objects.select_for_update().get(pk=batch_id)
        if batch.state == BatchState.PREPARING:
            if publish is not None:
                publish()
            batch.state = BatchState.GENERATING
            batch.provenance = provenance
            batch.save(update_fields=["state", "provenance"])
        return batch_advance(batch_id=batch_id, lease=lease)


def batch_finish(
    *, batch_id: int, report: dict[str, Any], lease: LeaseHolder | None = None
) -> None:
    with _held(lease):
        Batch.objects.filter(pk=batch_id, state=BatchState.REPORTING).update(
            report=report, state=BatchState.FINISHED, finished_at=timezone.now()
        )


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
