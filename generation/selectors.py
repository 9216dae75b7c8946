"""Reads for generation batches: per-stratum counts, the gallery, rejections, the export and
the jobs working for a batch, for its pages, commands and report."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

from django.db.models import Count, Q, QuerySet

from generation.models import Batch, Sample, Verdict
from jobs.models import Job, JobState
from training.models import GENERATING_KINDS, Run
from training.selectors import runs_finished

LIVE_JOBS_SHOWN = 8  # running shard/report jobs listed with their progress on the batch page
GALLERY_FSTS = {"1", "2", "3", "4", "5", "6"}
EXPORT_FIELDS = [
    "sample_id",
    "image_id",
    "diagnosis",
    "fst",
    "index",
    "seed",
    "verdict",
    "reasons",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance",
    "scheduler",
    "model_runs",
    "reference_image",
    "reference_strength",
    "class_label",
    "label_scale",
    "brightness",
    "lpips_real",
    "memorization_lpips",
    "confidence",
    "fid",
    "sha256",
    "file",
]


class StratumRow(TypedDict):
    """One stratum of a batch as its pages, the command and the report (JSON) show it."""

    diagnosis: str
    fst: int
    quota: int
    cap: int
    generated: int
    accepted: int
    rejected: int
    shortfall: int | None  # None until the stratum is complete
    complete: bool


def batch_strata(*, batch: Batch) -> list[StratumRow]:
    """Per stratum of the batch's plan: quota, cap, generated, accepted, rejected, state."""
    per_stratum = (
        Sample.objects.filter(batch=batch)
        .values("diagnosis", "fst")
        .annotate(
            generated=Count("id"),
            accepted=Count("id", filter=Q(verdict=Verdict.ACCEPTED)),
            rejected=Count("id", filter=Q(verdict=Verdict.REJECTED)),
        )
    )
    counts: dict[tuple[str, int], Mapping[str, Any]] = {
        (r["diagnosis"], r["fst"]): r for r in per_stratum
    }
    rows = []
    for cell in batch.plan():
        c = counts.get(cell.stratum, {})
        accepted = c.get("accepted", 0)
        complete = bool(batch.outcomes.get(cell.stratum.key))
        rows.append(
            StratumRow(
                diagnosis=cell.stratum.diagnosis,
                fst=cell.stratum.fst,
                quota=cell.quota,
                cap=cell.cap,
                generated=c.get("generated", 0),
                accepted=accepted,
                rejected=c.get("rejected", 0),
                shortfall=max(0, cell.quota - accepted) if complete else None,
                complete=complete,
            )
        )
    return rows


def batch_failed_jobs(*, batch: Batch) -> QuerySet[Job]:
    """The batch's shard and report jobs that failed or were cancelled."""
    return Job.objects.filter(parent=batch.job, state__in=[JobState.FAILED, JobState.CANCELLED])


def batch_job_states(*, batch: Batch) -> dict[str, int]:
    """How many of the batch's shard and report jobs are in each state."""
    if batch.job_id is None:
        return {}
    # order_by(): an ordering column would join the GROUP BY and split the counts per job.
    counts = (
        Job.objects.filter(parent_id=batch.job_id)
        .order_by()
        .values("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    return dict(counts)


def batch_running_jobs(*, batch: Batch, limit: int = LIVE_JOBS_SHOWN) -> list[Job]:
    """The batch's shard and report jobs now running, oldest first, at most ``limit``."""
    if batch.job_id is None:
        return []
    return list(
        Job.objects.filter(parent_id=batch.job_id, state=JobState.RUNNING).order_by("id")[:limit]
    )


def batch_gallery(
    *, batch: Batch, diagnosis: str = "", fst: str = "", verdict: str = ""
) -> QuerySet[Sample]:
    """The batch's samples with their images, in stratum and seed order; a filter that is
    empty or not a valid value (an FST outside 1-6, an unknown verdict) is ignored."""
    samples = Sample.objects.filter(batch=batch).select_related("image")
    if diagnosis:
        samples = samples.filter(diagnosis=diagnosis)
    if fst in GALLERY_FSTS:
        samples = samples.filter(fst=int(fst))
    if verdict in Verdict.values:
        samples = samples.filter(verdict=verdict)
    return samples.order_by("diagnosis", "fst", "index")


def batch_rejection_counts(*, batch: Batch) -> list[tuple[str, int]]:
    """Rejected samples per reason kind (a reason's first word), most frequent first."""
    reasons = Sample.objects.filter(batch=batch, verdict=Verdict.REJECTED).values_list(
        "reasons", flat=True
    )
    counts: dict[str, int] = {}
    for listed in reasons.iterator(chunk_size=1000):
        for reason in listed:
            kind = reason.split(" ")[0] if reason else "?"
            counts[kind] = counts.get(kind, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def batch_uncalibrated(*, batch: Batch) -> list[str]:
    """The feature extractors the batch scored with random weights, by name."""
    return sorted(n for n, p in batch.provenance.items() if not p.get("calibrated"))


def _export_row(s: Sample) -> dict[str, Any]:
    return {
        "sample_id": s.pk,
        "image_id": s.image_id,
        "diagnosis": s.diagnosis,
        "fst": s.fst,
        "index": s.index,
        "seed": s.seed,
        "verdict": s.verdict,
        "reasons": "; ".join(s.reasons),
        "prompt": s.prompt,
        "negative_prompt": s.negative_prompt,
        "steps": s.steps,
        "guidance": s.guidance,
        "scheduler": s.scheduler,
        "model_runs": " ".join(str(r) for r in s.model_runs),
        "reference_image": s.reference_image_id,
        "reference_strength": s.reference_strength,
        "class_label": s.class_label,
        "label_scale": s.label_scale,
        **{
            k: s.metrics.get(k)
            for k in ("brightness", "lpips_real", "memorization_lpips", "confidence", "fid")
        },
        "sha256": s.image.sha256,
        "file": s.image.preprocessed.name,
    }


def batch_export_rows(*, batch: Batch) -> Iterator[dict[str, Any]]:
    """Every sample with its settings, scores and verdict (keys EXPORT_FIELDS), streamed."""
    samples = (
        Sample.objects.filter(batch=batch)
        .select_related("image")
        .order_by("diagnosis", "fst", "index")
    )
    for s in samples.iterator(chunk_size=500):
        yield _export_row(s)


def batch_of_job(*, job: Job) -> Batch | None:
    """The batch a generation job works for: its own (prepare) or its parent's (shard, report)."""
    return Batch.objects.filter(job_id=job.parent_id or job.pk).first()


def model_runs_usable() -> QuerySet[Run]:
    """The runs a batch can be launched with: finished LoRA and joint runs (the service checks
    their lineage too)."""
    return runs_finished().filter(kind__in=GENERATING_KINDS)


def model_run_get(*, run_id: int) -> Run | None:
    """The run ``run_id`` with its job, for a launch to check; None if there is none."""
    return Run.objects.select_related("job").filter(pk=run_id).first()
