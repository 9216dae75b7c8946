"""Celery entry points: mail a notification (retried with backoff), and the periodic check."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications import services
from notifications.models import Notification
from notifications.selectors import notifications_unqueued

logger = logging.getLogger(__name__)


@shared_task(
    name="notifications.send_email",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=60,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=settings.FAIRSKIN_NOTIFY_EMAIL_RETRIES,
)
def send_email(*, notification_id: int) -> str:
    return services.notification_email_send(notification_id=notification_id)


def _enqueue(notification_id: int) -> None:
    send_email.apply_async(kwargs={"notification_id": notification_id}, queue="cpu")


def email_after_commit(notifications: Iterable[Notification]) -> None:
    """Queue each one's mail once the work that wrote it commits. ``robust``: a broker that
    refuses the message is logged and never raises into the work (the periodic check sends
    mails whose message was lost)."""
    for n in notifications:
        transaction.on_commit(partial(_enqueue, n.pk), robust=True)


@shared_task(name="notifications.periodic", acks_late=True)
def periodic() -> int:
    """Run by beat (CELERY_BEAT_SCHEDULE): reminders, missed fully-rated studies, lost mails."""
    with transaction.atomic():
        created = services.notify_periodic()
        email_after_commit(created)
    stale = timezone.now() - timedelta(minutes=10)
    for pk in notifications_unqueued(created_before=stale).values_list("pk", flat=True):
        _enqueue(pk)
    return len(created)
