"""Reads for pages outside the review app."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from review.models import Assignment, StudyRater, StudyState


def rater_studies(*, user: Any) -> list[dict[str, Any]]:
    """A dermatologist's studies with their own progress only."""
    seats = StudyRater.objects.filter(rater=user).exclude(
        study__state=StudyState.PREPARING).select_related("study").order_by("-study__created_at")
    counts = {r["study"]: r for r in Assignment.objects.filter(rater=user).values("study")
              .annotate(total=Count("id"), done=Count("rating", filter=Q(rating__isnull=False)))}
    return [{"study": seat.study, "total": counts.get(seat.study_id, {}).get("total", 0),
             "done": counts.get(seat.study_id, {}).get("done", 0)} for seat in seats]
