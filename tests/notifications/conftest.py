"""A finished batch (tests/review/conftest.py), raters with mail addresses, and Celery run in
this process so a mail queued after commit is sent before the test looks."""

import pytest
from django.core import mail

from notifications import tasks
from tests.factories import make_user
from tests.review.conftest import batch  # noqa: F401  (a fixture)


@pytest.fixture
def raters(db):
    users = [make_user("dermatologist", username=f"rater-{i}") for i in range(1, 4)]
    for user in users:
        user.email = f"{user.username}@clinic.example"
        user.save(update_fields=["email"])
    return users


def with_mail(user):
    user.email = f"{user.username}@example.org"
    user.save(update_fields=["email"])
    return user


@pytest.fixture
def eager_celery(settings, monkeypatch):
    """A queued mail runs here at once, with its retries (Task.apply: Celery's eager run)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(
        tasks, "_enqueue", lambda pk: tasks.send_email.apply(kwargs={"notification_id": pk})
    )
    mail.outbox = []
