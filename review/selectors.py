"""Reads on review studies, for the review pages and API and for pages outside the app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, F, Max, OuterRef, Q, QuerySet

from generation.models import Batch, BatchState, Sample, Verdict
from review.models import (
    Assignment,
    BatchRejection,
    Kind,
    Release,
    Study,
    StudyRater,
    StudyState,
)


def rater_studies(*, user: Any) -> list[dict[str, Any]]:
    """A dermatologist's studies with their own progress only."""
    seats = (
        StudyRater.objects.filter(rater=user)
        .exclude(study__state=StudyState.PREPARING)
        .select_related("study")
        .order_by("-study__created_at")
    )
    counts: dict[int, Mapping[str, Any]] = {
        r["study"]: r
        for r in Assignment.objects.filter(rater=user)
        .values("study")
        .annotate(total=Count("id"), done=Count("rating", filter=Q(rating__isnull=False)))
    }
    return [
        {
            "study": seat.study,
            "total": counts.get(seat.study_id, {}).get("total", 0),
            "done": counts.get(seat.study_id, {}).get("done", 0),
        }
        for seat in seats
    ]


def rater_progress(*, study_id: int, rater: Any) -> dict[str, int]:
    """The rater's item count and how many of them are rated, in one query."""
    return Assignment.objects.filter(study_id=study_id, rater=rater).aggregate(
        total=Count("id"), done=Count("rating")
    )


def open_study_raters_waiting() -> list[dict[str, Any]]:
    """Each rater of an open study with items still unrated: ``study`` (the row), ``rater_id``,
    ``waiting`` (unrated items) and ``last_rated_at`` (None before their first rating)."""
    rows = list(
        Assignment.objects.filter(study__state=StudyState.OPEN)
        .values("study", "rater")
        .annotate(
            total=Count("id"),
            done=Count("rating"),
            last_rated_at=Max("rating__created_at"),
        )
        .filter(done__lt=F("total"))
    )
    studies = Study.objects.in_bulk({r["study"] for r in rows})
    return [
        {
            "study": studies[r["study"]],
            "rater_id": r["rater"],
            "waiting": r["total"] - r["done"],
            "last_rated_at": r["last_rated_at"],
        }
        for r in rows
    ]


def open_studies_fully_rated() -> QuerySet[Study]:
    """Open studies with assignments, every one of them rated."""
    unrated = Assignment.objects.filter(study=OuterRef("pk"), rating__isnull=True)
    return (
        Study.objects.filter(state=StudyState.OPEN, assignments__isnull=False)
        .exclude(Exists(unrated))
        .distinct()
    )


def study_progress(*, study: Study) -> list[dict[str, Any]]:
    """Counts per rater; never scores (leads see only progress while a study is open)."""
    counts: dict[int, Mapping[str, Any]] = {
        r["rater"]: r
        for r in Assignment.objects.filter(study=study)
        .values("rater")
        .annotate(
            total=Count("id"),
            done=Count("rating"),
            scored=Count("id", filter=Q(kind=Kind.SCORED)),
            scored_done=Count("rating", filter=Q(kind=Kind.SCORED)),
        )
    }
    return [
        {
            "rater": sr.rater.username,
            "index": sr.index,
            "total": counts.get(sr.rater_id, {}).get("total", 0),
            "done": counts.get(sr.rater_id, {}).get("done", 0),
            "finished": bool(counts.get(sr.rater_id))
            and counts[sr.rater_id]["scored"] == counts[sr.rater_id]["scored_done"],
        }
        for sr in study.raters.select_related("rater")
    ]


def study_list() -> QuerySet[Study]:
    """The newest studies, for the studies page."""
    return Study.objects.select_related("batch", "release")[:100]


def release_list() -> QuerySet[Release]:
    """The newest releases, for the studies page."""
    return Release.objects.select_related("study")[:50]


def study_release(*, study: Study) -> Release | None:
    return Release.objects.filter(study=study).first()


def study_gate_report(*, study: Study) -> dict[str, Any] | None:
    """The gate report, or None while the study is not closed (the gate is evaluated then)."""
    return study.gate if study.state == StudyState.CLOSED else None


def release_image_counts(*, release: Release) -> list[tuple[str, dict[int, int]]]:
    """Images of a release per diagnosis and skin type, from its manifest."""
    counts: dict[str, dict[int, int]] = {}
    for entry in release.manifest["images"]:
        row = counts.setdefault(entry["diagnosis"], dict.fromkeys(range(1, 7), 0))
        row[entry["fst"]] += 1
    return sorted(counts.items())


def study_batch_choices() -> QuerySet[Batch]:
    """Batches a study can be opened on: finished, neither released nor rejected."""
    return Batch.objects.filter(
        state=BatchState.FINISHED, releases__isnull=True, rejection__isnull=True
    )


def study_rater_choices() -> QuerySet[Any]:
    """The active dermatologist accounts, who can be seated as raters."""
    return (
        get_user_model()
        .objects.filter(groups__name="dermatologist", is_active=True)
        .order_by("username")
    )


def rater_study(*, study_id: int, rater: Any) -> Study | None:
    """The study if the rater has a seat in it; None for an unknown study and for one seated to
    others alike."""
    return Study.objects.filter(pk=study_id, raters__rater=rater).first()


def rater_queue_study(*, study_id: int, rater: Any) -> Study | None:
    """rater_study for the queue: one query (the seat checked with Exists), id and state only."""
    seat = StudyRater.objects.filter(study=OuterRef("pk"), rater=rater)
    study = (
        Study.objects.only("pk", "state").annotate(is_mine=Exists(seat)).filter(pk=study_id).first()
    )
    return study if study is not None and study.is_mine else None


def rater_instructions_pending(*, study: Study, rater: Any) -> bool:
    """Whether the rater has yet to accept this version of the study's instructions."""
    seat = StudyRater.objects.get(study=study, rater=rater)
    return seat.instructions_accepted != study.instructions_version


def blinded_assignment(*, token: str, rater: Any) -> Assignment | None:
    """The assignment behind a token, with its item, if it is the rater's and its study is open;
    None otherwise (an unknown token and another rater's get the same answer)."""
    assignment = Assignment.objects.select_related("item", "study").filter(token=token).first()
    if assignment is None or assignment.rater_id != rater.pk:
        return None
    if assignment.study.state != StudyState.OPEN:
        return None
    return assignment


def study_of_job(*, job: Any) -> Study | None:
    """The study a review.prepare job prepares."""
    return Study.objects.filter(job_id=job.pk).first()


def release_of_export_job(*, job: Any) -> Release | None:
    """The release a review.export job writes."""
    return Release.objects.filter(export_job_id=job.pk).first()


# --- the lead's pages: what a decision would do, the home panel, a batch's decision ---------


def study_close_outlook(*, study: Study, progress: list[dict[str, Any]]) -> dict[str, Any]:
    """What closing the study now means, from the progress counts: ratings done of the total,
    and the raters who have not finished (closing then fails criterion (d))."""
    unfinished = [p["rater"] for p in progress if not p["finished"]]
    return {
        "done": sum(p["done"] for p in progress),
        "total": sum(p["total"] for p in progress),
        "n_raters": len(progress),
        "unfinished": unfinished,
        "fails_d": bool(unfinished),
    }


def batch_accepted_count(*, batch_id: int) -> int:
    """How many accepted images an approval of the batch would release."""
    return Sample.objects.filter(batch_id=batch_id, verdict=Verdict.ACCEPTED).count()


def lead_studies(*, limit: int = 10) -> list[Study]:
    """The newest studies for the lead's home page, open ones first."""
    studies = Study.objects.select_related("batch__rejection", "release").order_by("-created_at")[
        :limit
    ]
    return sorted(studies, key=lambda s: s.state != StudyState.OPEN)


def lead_releases(*, limit: int = 10) -> QuerySet[Release]:
    return Release.objects.select_related("export_job")[:limit]


def batches_awaiting_review() -> QuerySet[Batch]:
    """Finished batches no study has been opened on, neither released nor rejected."""
    return (
        Batch.objects.filter(state=BatchState.FINISHED, studies__isnull=True)
        .filter(releases__isnull=True, rejection__isnull=True)
        .order_by("-pk")
    )


def batch_decision(*, batch_id: int) -> dict[str, Any]:
    """A batch's review outcome for its page: its release or rejection, and its studies."""
    return {
        "release": Release.objects.filter(batch_id=batch_id).first(),
        "rejection": BatchRejection.objects.filter(batch_id=batch_id)
        .select_related("rejected_by")
        .first(),
        "studies": list(Study.objects.filter(batch_id=batch_id).order_by("-created_at")),
    }


def study_audit_power(*, study: Study) -> dict[str, int] | None:
    """When the study's drawn design has too few real controls for the blinding audit to
    detect even a perfect separation at its alpha: the counts and the controls needed
    (None: enough, or not drawn yet). Criteria version 1 has no audit criterion."""
    from fairskin.review.audit import DEFAULT_ALPHA, DEFAULT_PERMUTATIONS, real_files_needed

    plan = study.plan or {}
    synthetic, controls = plan.get("synthetic"), plan.get("controls")
    if (study.criteria or {}).get("version", 1) < 2 or synthetic is None or controls is None:
        return None
    needed = real_files_needed(int(synthetic), DEFAULT_ALPHA, DEFAULT_PERMUTATIONS)
    if needed is None or int(controls) >= needed:
        return None
    return {"controls": int(controls), "synthetic": int(synthetic), "needed": needed}
