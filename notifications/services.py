"""Writes on notifications: record an event for its recipients (once), mail it, mark it read,
and the periodic check (reminders, studies whose last ratings crossed).

Deduplication is the table's unique constraint on (kind, object, occurrence, recipient):
- a study's opening is ``opened``; a reminder is ``reminder:<n>`` (n up to the maximum);
- a study fully rated is ``rated`` (the rating that completes it, or the periodic check);
- a job's outcome is ``attempt:<n>``, the attempt that ended. The same attempt's outcome
  recorded twice writes one row; a job resumed after a failure runs a new attempt, so its
  second failure is a new event and its launcher is told again, naming the attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from jobs.registry import job_owner
from jobs.selectors import job_get
from notifications import messages
from notifications.messages import Message
from notifications.models import EmailState, Notification, NotificationKind, NotificationOptOut
from notifications.selectors import opted_out, reminders_sent
from review.selectors import open_studies_fully_rated, open_study_raters_waiting

logger = logging.getLogger(__name__)

# A run or a batch: success is told when the whole of it is done (a run's job; a batch's
# report, its last job); a failure of any of their jobs is told, since it stops the work.
SUCCESS_KINDS = frozenset({"training.run", "training.import_external", "generation.report"})
FAILURE_PREFIXES = ("training.", "generation.")


def notify(
    *, kind: str, object_key: str, occurrence: str, recipient_ids: Iterable[int], message: Message
) -> list[Notification]:
    """Record the event for each recipient who has not turned ``kind`` off and was not told
    of this occurrence yet. Returns the rows written now (their mail is still to send)."""
    recipients = set(recipient_ids)
    wanted = recipients - opted_out(kind=kind, user_ids=recipients)
    known = set(
        Notification.objects.filter(
            kind=kind, object_key=object_key, occurrence=occurrence, recipient_id__in=wanted
        ).values_list("recipient_id", flat=True)
    )
    created = []
    for recipient_id in sorted(wanted - known):
        try:
            with transaction.atomic():  # a savepoint: a rival writer's row only skips this one
                created.append(
                    Notification.objects.create(
                        recipient_id=recipient_id,
                        kind=kind,
                        object_key=object_key,
                        occurrence=occurrence,
                        subject=message.subject[:200],
                        body=message.body,
                        link=message.link[:300],
                    )
                )
        except IntegrityError:
            continue
    return created


def _active(user_ids: Iterable[int | None]) -> list[int]:
    ids = [pk for pk in user_ids if pk is not None]
    return list(
        get_user_model().objects.filter(pk__in=ids, is_active=True).values_list("pk", flat=True)
    )


def _leads_of(study: Any) -> list[int]:
    """The lead who created the study; every active lead when nobody did (a command)."""
    if study.created_by_id is not None:
        return _active([study.created_by_id])
    users = get_user_model().objects.filter(groups__name=Role.LEAD.value, is_active=True)
    return list(users.values_list("pk", flat=True))


def notify_study_opened(*, study: Any, waiting: dict[int, int]) -> list[Notification]:
    created = []
    for rater_id in _active(waiting):
        created += notify(
            kind=NotificationKind.STUDY_ASSIGNED,
            object_key=f"study:{study.pk}",
            occurrence="opened",
            recipient_ids=[rater_id],
            message=messages.rater_assigned(
                study_id=study.pk, study_name=study.name, waiting=waiting[rater_id]
            ),
        )
    return created


def notify_study_fully_rated(*, study: Any) -> list[Notification]:
    return notify(
        kind=NotificationKind.STUDY_RATED,
        object_key=f"study:{study.pk}",
        occurrence="rated",
        recipient_ids=_leads_of(study),
        message=messages.lead_study_rated(
            study_id=study.pk, study_name=study.name, raters=study.raters.count()
        ),
    )


def notify_job_finished(*, job: Any, state: str) -> list[Notification]:
    """Tell whoever launched a run's or a batch's job how it ended (cancelled: not told, they
    or a colleague asked for it)."""
    # Decided from the state and kind first: most jobs that end (shards, thumbnails, reports
    # nobody is told of) need no read at all.
    succeeded = state == "succeeded"
    if succeeded:
        told = job.kind in SUCCESS_KINDS
    else:
        told = state == "failed" and job.kind.startswith(FAILURE_PREFIXES)
    if not told:
        return []
    job = job_get(job_id=job.pk)  # the sender's row may be partial or read before the change
    if job.launched_by_id is None:
        return []
    owner = job_owner(job)
    what = owner.label if owner is not None else f"job {job.pk}"
    path = owner.url if owner is not None else reverse("jobs:detail", args=[job.pk])
    return notify(
        kind=NotificationKind.JOB_SUCCEEDED if succeeded else NotificationKind.JOB_FAILED,
        object_key=f"job:{job.pk}",
        occurrence=f"attempt:{job.attempt}",
        recipient_ids=_active([job.launched_by_id]),
        message=messages.job_outcome(
            what=what, succeeded=succeeded, attempt=job.attempt, error=job.error, path=path
        ),
    )


def notify_periodic(*, now: Any = None) -> list[Notification]:
    """The periodic check: remind raters idle past the setting (at most the maximum per
    study), and tell leads of studies fully rated that the rating path missed."""
    now = now or timezone.now()
    created = []
    for study in open_studies_fully_rated():
        created += notify_study_fully_rated(study=study)
    created += _reminders(now=now)
    return created


def _reminders(*, now: Any) -> list[Notification]:
    idle = timedelta(hours=settings.FAIRSKIN_NOTIFY_REMINDER_IDLE_HOURS)
    limit = settings.FAIRSKIN_NOTIFY_REMINDER_MAX
    rows = open_study_raters_waiting()
    sent = reminders_sent(study_ids={row["study"].pk for row in rows})
    created = []
    for row in rows:
        study = row["study"]
        count, last_reminder = sent.get((study.pk, row["rater_id"]), (0, None))
        moments = [t for t in (study.opened_at, row["last_rated_at"], last_reminder) if t]
        if count >= limit or not moments or now - max(moments) < idle:
            continue
        created += notify(
            kind=NotificationKind.RATING_REMINDER,
            object_key=f"study:{study.pk}",
            occurrence=f"reminder:{count + 1}",
            recipient_ids=_active([row["rater_id"]]),
            message=messages.rater_reminder(
                study_id=study.pk, study_name=study.name, waiting=row["waiting"]
            ),
        )
    return created


def notification_email_send(*, notification_id: int) -> str:
    """Mail one notification unless it was mailed already. A mail server's error is recorded
    on the row (left pending, with the error) and raised, so the task retries it."""
    with transaction.atomic():
        # The lock makes a duplicate delivery of the task wait, then see it sent.
        n = (
            Notification.objects.select_for_update()
            .select_related("recipient")
            .filter(pk=notification_id)
            .first()
        )
        if n is None or n.email_state != EmailState.PENDING:
            return "skipped"
        if not n.recipient.email:
            n.email_state = EmailState.NO_ADDRESS
            n.save(update_fields=["email_state"])
            return EmailState.NO_ADDRESS
        try:
            EmailMessage(subject=n.subject, body=n.body, to=[n.recipient.email]).send()
        except Exception as exc:
            mail_error: Exception = exc
        else:
            n.email_state, n.email_sent_at = EmailState.SENT, timezone.now()
            n.email_attempts += 1
            n.save(update_fields=["email_state", "email_sent_at", "email_attempts"])
            return EmailState.SENT
    Notification.objects.filter(pk=notification_id).update(
        email_attempts=n.email_attempts + 1,
        email_error=f"{type(mail_error).__name__}: {mail_error}"[:2000],
    )
    raise mail_error


def notification_mark_read(*, user: Any, notification_id: int | None = None) -> int:
    """Mark one of the user's notifications read (all of them when no id). Returns how many
    changed; another user's notification is never touched."""
    unread = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if notification_id is not None:
        unread = unread.filter(pk=notification_id)
    return unread.update(read_at=timezone.now())


def notification_preferences_set(
    *, user: Any, offered: Iterable[str], enabled: Iterable[str]
) -> None:
    """Of the kinds ``offered`` to ``user``, turn on those in ``enabled`` and off the rest."""
    offered, on = set(offered), set(enabled)
    with transaction.atomic():
        NotificationOptOut.objects.filter(user=user, kind__in=offered & on).delete()
        for kind in sorted(offered - on):
            NotificationOptOut.objects.get_or_create(user=user, kind=kind)
