"""Reads on notifications: a user's list, their preferences, what the periodic check needs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, QuerySet

from notifications.models import EmailState, Notification, NotificationKind, NotificationOptOut


def notification_list(*, user: Any, limit: int = 10) -> list[Notification]:
    """The user's newest notifications first."""
    return list(Notification.objects.filter(recipient=user).order_by("-created_at", "-id")[:limit])


def notification_unread_count(*, user: Any) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


def opted_out(*, kind: str, user_ids: Iterable[int]) -> set[int]:
    """Which of these users turned ``kind`` off."""
    return set(
        NotificationOptOut.objects.filter(kind=kind, user_id__in=list(user_ids)).values_list(
            "user_id", flat=True
        )
    )


def notification_kinds_enabled(*, user: Any) -> dict[str, bool]:
    """Every kind, on unless the user turned it off."""
    off = set(NotificationOptOut.objects.filter(user=user).values_list("kind", flat=True))
    return {kind.value: kind.value not in off for kind in NotificationKind}


def reminders_sent(*, study_ids: Iterable[int]) -> dict[tuple[int, int], tuple[int, datetime]]:
    """Per (study id, rater id): how many reminders were recorded and when the last was."""
    keys = [f"study:{pk}" for pk in study_ids]
    rows = (
        Notification.objects.filter(kind=NotificationKind.RATING_REMINDER, object_key__in=keys)
        .values("object_key", "recipient")
        .annotate(n=Count("id"), last=Max("created_at"))
    )
    return {
        (int(r["object_key"].split(":", 1)[1]), r["recipient"]): (r["n"], r["last"]) for r in rows
    }


def notifications_unqueued(*, created_before: datetime) -> QuerySet[Notification]:
    """Mails never tried (their enqueue was lost, e.g. the broker was down at commit)."""
    return Notification.objects.filter(
        email_state=EmailState.PENDING, email_attempts=0, created_at__lt=created_before
    )
