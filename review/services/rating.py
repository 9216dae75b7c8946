"""Writes by raters: where they are in their queue, and their ratings, with every refusal
audited."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from review.models import Assignment, Rating, RatingAudit, Study, StudyRater, StudyState
from review.selectors import rater_progress
from review.services.errors import InvalidRating, RatingRefused
from review.signals import study_fully_rated

MAX_SECONDS = 3600.0  # a rating left open overnight is recorded as an hour

# An unknown token and another rater's token get the same answer: a rater cannot tell whether
# a token exists (the audit keeps the difference).
NOT_YOURS = "this item is not in your assignments"


def _audit(
    study_id: int,
    rater: Any,
    assignment: Assignment | None,
    action: str,
    *,
    score: int | None = None,
    previous: int | None = None,
    detail: str = "",
) -> None:
    RatingAudit.objects.create(
        study_id=study_id,
        rater=rater if getattr(rater, "pk", None) else None,
        assignment=assignment,
        action=action,
        score=score,
        previous=previous,
        detail=detail[:300],
    )


def rater_instructions_accept(*, study: Study, rater: Any, version: int) -> None:
    """Record that the rater read the study's instructions in this version; the rating screen
    asks again when the instructions change."""
    seat = StudyRater.objects.get(study=study, rater=rater)
    seat.instructions_accepted = version
    seat.save(update_fields=["instructions_accepted"])


def rater_queue(*, study: Study, rater: Any) -> dict[str, Any]:
    """Where the rater is: the first unrated item and the one after it (for prefetching)."""
    pending = list(
        Assignment.objects.filter(study=study, rater=rater, rating__isnull=True).order_by(
            "position"
        )[:2]
    )
    if pending and pending[0].first_served_at is None:
        Assignment.objects.filter(pk=pending[0].pk, first_served_at__isnull=True).update(
            first_served_at=timezone.now()
        )
    return {
        **rater_progress(study_id=study.pk, rater=rater),
        "current": pending[0] if pending else None,
        "next": pending[1] if len(pending) > 1 else None,
    }


def rating_submit(*, token: str, rater: Any, score: Any, seconds: Any) -> tuple[Rating, bool]:
    """Record a rating. Returns (rating, created). A repeat of the same submission is harmless;
    anything else that may not be written raises RatingRefused and is audited."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 7:
        raise InvalidRating("a rating is a whole number from 1 to 7")
    try:
        seconds = min(max(float(seconds), 0.0), MAX_SECONDS)
    except (TypeError, ValueError) as exc:
        raise InvalidRating("seconds must be a number") from exc
    outcome = _rating_write(token=token, rater=rater, score=score, seconds=seconds)
    if isinstance(outcome, _Refusal):
        # Audited after the write's transaction ended, so the refusal itself is kept.
        _audit(
            outcome.study_id,
            rater,
            outcome.assignment,
            "refused",
            score=score,
            previous=outcome.previous,
            detail=outcome.detail,
        )
        raise RatingRefused(outcome.message)
    return outcome


class _Refusal:
    def __init__(
        self,
        study_id: int,
        assignment: Assignment | None,
        message: str,
        detail: str,
        previous: int | None = None,
    ) -> None:
        self.study_id, self.assignment = study_id, assignment
        self.message, self.detail, self.previous = message, detail, previous


def _rating_write(
    *, token: str, rater: Any, score: int, seconds: float
) -> tuple[Rating, bool] | _Refusal:
    with transaction.atomic():
        # Only the assignment is locked: locking the study row too made every rater of a
        # study queue behind each other's writes. The study is read after the lock is held, so
        # a close that committed meanwhile is seen; study_close locks every assignment of the
        # study, so it waits for writes in flight and later ones wait for it.
        assignment = Assignment.objects.select_for_update().filter(token=token).first()
        if assignment is None:
            raise RatingRefused(NOT_YOURS)
        study = Study.objects.only("pk", "state", "allow_changes").get(pk=assignment.study_id)
        if assignment.rater_id != rater.pk:
            return _Refusal(study.pk, None, NOT_YOURS, "token of another rater's assignment")
        if study.state != StudyState.OPEN:
            return _Refusal(study.pk, assignment, "this study is closed", "study closed")
        existing = Rating.objects.filter(assignment=assignment).first()
        if existing is not None:
            if existing.score == score:
                _audit(study.pk, rater, assignment, "repeated", score=score)
                return existing, False
            if not study.allow_changes:
                return _Refusal(
                    study.pk,
                    assignment,
                    "this rating was submitted and is locked",
                    "rating locked",
                    previous=existing.score,
                )
            previous = existing.score
            existing.score, existing.seconds = score, seconds
            existing.save(update_fields=["score", "seconds", "updated_at"])
            _audit(study.pk, rater, assignment, "changed", score=score, previous=previous)
            return existing, False
        current = (
            Assignment.objects.filter(study=study, rater=rater, rating__isnull=True)
            .order_by("position")
            .values_list("pk", flat=True)
            .first()
        )
        if current != assignment.pk:
            return _Refusal(
                study.pk,
                assignment,
                "rate the images in the order they are shown",
                "not the current item",
            )
        rating = Rating.objects.create(
            assignment=assignment,
            study=study,
            rater=rater,
            item_id=assignment.item_id,
            kind=assignment.kind,
            score=score,
            seconds=seconds,
        )
        _audit(study.pk, rater, assignment, "created", score=score)
        # Two raters finishing at once may each still see the other's last item unrated;
        # the notifications' periodic check catches a study both missed.
        if not Assignment.objects.filter(study=study, rating__isnull=True).exists():
            study_fully_rated.send(sender=Study, study=study)
        return rating, True
