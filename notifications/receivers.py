"""The events notifications listens to (connected in apps.ready). Each receiver runs inside
the transaction of the work it reports, in a savepoint of its own: an error here is logged
and rolled back to that savepoint, never raised into the work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from notifications import services
from notifications.models import Notification
from notifications.tasks import email_after_commit

logger = logging.getLogger(__name__)


def _guarded(write: Callable[[], list[Notification]]) -> None:
    try:
        with transaction.atomic():
            created = write()
    except Exception:
        logger.exception("notification not recorded; the work goes on")
        return
    email_after_commit(created)


def on_job_finished(sender: Any, *, job: Any, state: str, **_: Any) -> None:
    _guarded(lambda: services.notify_job_finished(job=job, state=state))


def on_study_opened(sender: Any, *, study: Any, waiting: dict[int, int], **_: Any) -> None:
    _guarded(lambda: services.notify_study_opened(study=study, waiting=waiting))


def on_study_fully_rated(sender: Any, *, study: Any, **_: Any) -> None:
    _guarded(lambda: services.notify_study_fully_rated(study=study))
