"""The batch's progression under its jobs' leases: start, decide and plan shards, finish.

The batch's plan (quotas, caps, seeds) is fixed at creation (generation.services). Work is
handed out in shards: first every stratum's quota worth of candidates, then, as shards finish
and acceptance is decided in seed order, more candidates for the strata still short, sized by
their acceptance rate so far and never past their cap. `batch_advance` is the only place that
decides verdicts and plans shards; it runs under a row lock on the batch and is idempotent, so
a shard that is re-run after its worker died changes nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from fairskin.generation.plan import CandidateRange, cut_into_shards, decide_stratum
from fairskin.generation.scoring_config import ScoringConfig
from fairskin.generation.similarity import NearDuplicateCheck
from generation.models import Batch, BatchState, Sample, Verdict
from jobs.models import TERMINAL_STATES, Job
from jobs.registry import LeaseHolder
from jobs.services import job_cancel, job_create

# The lowest acceptance rate used to size a top-up; below it a stratum tops up in larger steps
# rather than one shard per rejected image.
MIN_RATE_ESTIMATE = 0.25


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
    calibration: dict[str, Any] | None = None,
    lease: LeaseHolder | None = None,
    publish: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The reference is ready: publish it, record the extractors and the filter calibration
    (`fairskin.generation.held_out.filter_calibration`) and hand out the first shards, all
    under the preparing job's lease (a stalled attempt changes nothing)."""
    with _held(lease):
        batch = Batch.objects.select_for_update().get(pk=batch_id)
        if batch.state == BatchState.PREPARING:
            if publish is not None:
                publish()
            batch.state = BatchState.GENERATING
            batch.provenance = provenance
            batch.filter_calibration = calibration or {}
            batch.save(update_fields=["state", "provenance", "filter_calibration"])
        return batch_advance(batch_id=batch_id, lease=lease)


def batch_finish(
    *, batch_id: int, report: dict[str, Any], lease: LeaseHolder | None = None
) -> None:
    with _held(lease):
        Batch.objects.filter(pk=batch_id, state=BatchState.REPORTING).update(
            report=report, state=BatchState.FINISHED, finished_at=timezone.now()
        )
