"""A real Celery worker takes a notification's mail from the cpu queue after the work
committed; with the mail server down, the mail stays pending with the server's error and the
task is scheduled again."""

import pytest
from django.db import transaction

from notifications.messages import Message
from notifications.models import Notification
from notifications.services import notify
from notifications.tasks import email_after_commit
from tests.conftest import wait_for
from tests.factories import make_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_worker_records_a_down_mail_server_and_retries_later(start_worker):
    user = make_user("engineer")
    user.email = "eng@example.org"
    user.save()
    worker = start_worker(queues="cpu", EMAIL_URL="smtp://127.0.0.1:9")  # nothing listens
    with transaction.atomic():
        created = notify(
            kind="job_failed",
            object_key="job:1",
            occurrence="attempt:1",
            recipient_ids=[user.pk],
            message=Message(subject="run 1 failed", body="...", link="/jobs/1/"),
        )
        email_after_commit(created)
        # Nothing is queued before the work commits.
        assert Notification.objects.get().email_attempts == 0

    def tried():
        n = Notification.objects.get()
        return n.email_attempts >= 1 and n

    n = wait_for(tried, timeout=60, what="the worker to try the mail", workers=[worker])
    assert n.email_state == "pending" and n.email_sent_at is None
    assert "ConnectionRefusedError" in n.email_error
    wait_for(
        lambda: "notifications.send_email" in worker.output() and "Retry in" in worker.output(),
        timeout=10,
        what="the retry to be scheduled",
        workers=[worker],
    )
