"""Each role's home page lists its own notifications, newest first, with a mark-read action
(POST, CSRF); the preferences page offers the role's kinds, on until turned off."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from notifications import tasks
from notifications.messages import Message
from notifications.models import Notification
from notifications.services import notify
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def tell(user, subject, *, kind="job_failed", key="job:1", occurrence="attempt:1"):
    (n,) = notify(
        kind=kind,
        object_key=key,
        occurrence=occurrence,
        recipient_ids=[user.pk],
        message=Message(subject=subject, body="...", link="/jobs/1/"),
    )
    return n


@pytest.mark.parametrize("role", ["dermatologist", "lead", "engineer"])
def test_each_roles_home_lists_its_own_notifications_newest_first(client, role):
    user, other = make_user(role), make_user(role)
    old = tell(user, "Older news", occurrence="attempt:1")
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    tell(user, "Newer news", occurrence="attempt:2")
    tell(other, "Someone else's news")
    client.force_login(user)
    page = client.get("/").content.decode()
    assert page.index("Newer news") < page.index("Older news")
    assert "Someone else" not in page and "2 new" in page
    assert "just now" in page and "2\xa0hours ago" in page  # never "0 minutes ago"


def test_mark_read_needs_a_post_with_csrf_and_touches_only_the_users_own():
    user, other = make_user("engineer"), make_user("engineer")
    mine, theirs = tell(user, "Mine"), tell(other, "Theirs")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(f"/notifications/{mine.pk}/read/").status_code == 405
    assert client.post(f"/notifications/{mine.pk}/read/").status_code == 403  # no token
    client.get("/")
    token = client.cookies["csrftoken"].value
    for n in (mine, theirs):
        response = client.post(f"/notifications/{n.pk}/read/", HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 302
    mine.refresh_from_db(), theirs.refresh_from_db()
    assert mine.read_at is not None and theirs.read_at is None
    assert "1 new" not in client.get("/").content.decode()


def test_the_preferences_page_offers_the_roles_kinds_and_keeps_the_others(client):
    rater = make_user("dermatologist")
    client.force_login(rater)
    page = client.get("/notifications/preferences/").content.decode()
    assert page.count('type="checkbox"') == 2 and page.count("checked") == 2
    assert "job_failed" not in page
    # Turning one off, and posting a kind the page did not offer, which changes nothing.
    client.post("/notifications/preferences/", {"enabled": ["study_assigned", "job_failed"]})
    page = client.get("/notifications/preferences/").content.decode()
    assert page.count("checked") == 1
    assert list(rater.notification_opt_outs.values_list("kind", flat=True)) == ["rating_reminder"]


def test_the_periodic_task_sends_mails_whose_message_was_lost(
    eager_celery, django_capture_on_commit_callbacks
):
    from django.core import mail

    user = make_user("engineer")
    user.email = "eng@example.org"
    user.save()
    lost = tell(user, "Lost in the broker")
    Notification.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(hours=1))
    fresh = tell(user, "Still on its way", occurrence="attempt:2")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.periodic()
    assert [m.subject for m in mail.outbox] == ["Lost in the broker"]
    fresh.refresh_from_db()
    assert fresh.email_state == "pending"
