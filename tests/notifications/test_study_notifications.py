"""Raters are told when a study opens and reminded when they stall; the study's lead when
every rater has finished. Each once, only to them, and a rater's words unblind nothing."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from catalog.models import Image
from generation.models import Sample
from notifications import services
from notifications.models import Notification, NotificationKind
from notifications.tasks import email_after_commit
from review.models import Assignment, Rating, StudyItem
from review.services.rating import rating_submit
from review.services.study import study_create
from review.signals import study_opened
from tests.factories import make_user
from tests.notifications.conftest import with_mail
from tests.review.conftest import open_study as open_study_here

pytestmark = pytest.mark.django_db


def open_study(batch, raters, *, user=None, capture=None, **options):
    options = {"sample_size": 8, "control_ratio": 0.25, "seed": 5, **options}
    if user is None:
        return open_study_here(batch, raters, **options)
    from jobs.runner import execute_job

    study = study_create(batch=batch, raters=raters, enqueue=False, user=user, **options)
    assert execute_job(job_id=study.job_id) == "succeeded"
    study.refresh_from_db()
    return study


def rows(kind, **filters):
    return list(Notification.objects.filter(kind=kind, **filters).order_by("recipient_id"))


def test_opening_tells_each_rater_once_with_their_count_and_mails_them_after_commit(
    batch, raters, eager_celery, django_capture_on_commit_callbacks
):
    lead = with_mail(make_user("lead"))
    engineer = with_mail(make_user("engineer"))
    outsider = with_mail(make_user("dermatologist"))
    with django_capture_on_commit_callbacks(execute=True):
        study = open_study(batch, raters, user=lead)

    told = rows(NotificationKind.STUDY_ASSIGNED)
    assert [n.recipient_id for n in told] == sorted(r.pk for r in raters)
    for n in told:
        waiting = Assignment.objects.filter(study=study, rater_id=n.recipient_id).count()
        assert f"{waiting} images" in n.subject
        assert n.link.endswith(f"/review/studies/{study.pk}/rate/")
        assert n.email_state == "sent"
    assert sorted(m.to[0] for m in mail.outbox) == sorted(r.email for r in raters)
    assert not Notification.objects.filter(recipient__in=[lead, engineer, outsider]).exists()

    # The signal again (a preparation retried after it opened the study): nothing new.
    with django_capture_on_commit_callbacks(execute=True):
        waiting = {r.pk: 1 for r in raters}
        study_opened.send(sender=type(study), study=study, waiting=waiting)
    assert len(rows(NotificationKind.STUDY_ASSIGNED)) == 3
    assert len(mail.outbox) == 3


UNBLINDING_WORDS = re.compile(
    r"\b(real|synthetic|generated|fake|origin|control|controls|score|scores|metric|metrics|"
    r"fid|lpips|ita|accepted|rejected|verdict|batch|gate|diagnosis|mel|nv|fst)\b",
    re.IGNORECASE,
)


def test_a_raters_messages_carry_nothing_that_could_unblind(
    batch, raters, eager_celery, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        study = open_study(batch, raters, user=make_user("lead"))
    rater = raters[0]
    # Some ratings, then a stall long enough for a reminder.
    for assignment in Assignment.objects.filter(study=study, rater=rater).order_by("position")[:3]:
        rating_submit(token=assignment.token, rater=rater, score=6, seconds=1.0)
    later = timezone.now() + timedelta(hours=49)
    with django_capture_on_commit_callbacks(execute=True):
        email_after_commit(services.notify_periodic(now=later))

    messages = [(n.subject, n.body, n.link) for n in Notification.objects.filter(recipient=rater)]
    assert {n.kind for n in Notification.objects.filter(recipient=rater)} == {
        "study_assigned",
        "rating_reminder",
    }
    messages += [(m.subject, m.body, "") for m in mail.outbox if m.to == [rater.email]]
    assert len(messages) == 4

    items = StudyItem.objects.filter(study=study)
    images = Image.objects.filter(pk__in=items.values("image_id"))
    secrets = {a.token for a in Assignment.objects.filter(study=study)}
    secrets |= {i.derivative.name for i in items} | {i.derivative_sha256 for i in items}
    secrets |= {i.preprocessed.name for i in images} | {i.source_id for i in images}
    secrets |= {i.sha256 for i in images if i.sha256}
    secrets |= {batch.dataset.name, "real-clinic", "/media/", "/review/i/", ".png", ".jpg"}
    secrets |= set(Sample.objects.filter(batch=batch).values_list("image__source_id", flat=True))
    for subject, body, link in messages:
        text = f"{subject}\n{body}\n{link}"
        assert not UNBLINDING_WORDS.search(text), text
        assert not [s for s in secrets if s and s in text], text
        # The only numbers: the study's, and how many images wait.
        waiting = Assignment.objects.filter(study=study, rater=rater).count()
        numbers = set(re.findall(r"\d+", text)) - {str(study.pk), "8000"}
        assert numbers <= {str(waiting), str(waiting - 3)}, (numbers, text)
    assert Rating.objects.filter(rater=rater).count() == 3


def test_the_lead_who_opened_the_study_is_told_once_when_the_last_rating_lands(batch, raters):
    lead, other_lead = make_user("lead"), make_user("lead")
    study = open_study(batch, raters, user=lead, sample_size=4)
    assignments = list(Assignment.objects.filter(study=study).order_by("rater_id", "position"))
    for assignment in assignments[:-1]:
        rating_submit(token=assignment.token, rater=assignment.rater, score=4, seconds=1.0)
    assert not rows(NotificationKind.STUDY_RATED)

    last = assignments[-1]
    rating_submit(token=last.token, rater=last.rater, score=4, seconds=1.0)
    told = rows(NotificationKind.STUDY_RATED)
    assert [n.recipient_id for n in told] == [lead.pk]
    assert "gate is ready" in told[0].subject and told[0].link.endswith(f"/studies/{study.pk}/")

    # The same rating again, and the periodic check: still one.
    rating_submit(token=last.token, rater=last.rater, score=4, seconds=1.0)
    services.notify_periodic(now=timezone.now())
    assert len(rows(NotificationKind.STUDY_RATED)) == 1
    assert not Notification.objects.filter(recipient=other_lead).exists()
    # No rater is told anything about the finished study but its opening.
    assert {n.kind for n in Notification.objects.filter(recipient__in=raters)} == {"study_assigned"}

    # Two raters finishing at once can both miss it; the periodic check then tells the lead.
    Notification.objects.filter(kind=NotificationKind.STUDY_RATED).delete()
    assert [n.recipient_id for n in services.notify_periodic(now=timezone.now())] == [lead.pk]


def test_idle_raters_are_reminded_after_the_idle_period_up_to_the_maximum(batch, raters, settings):
    settings.FAIRSKIN_NOTIFY_REMINDER_IDLE_HOURS = 24
    settings.FAIRSKIN_NOTIFY_REMINDER_MAX = 2
    study = open_study(batch, raters, sample_size=4)
    type(study).objects.filter(pk=study.pk).update(opened_at=timezone.now() - timedelta(hours=30))
    busy, finished, idle = raters
    for assignment in Assignment.objects.filter(study=study, rater=finished):
        rating_submit(token=assignment.token, rater=finished, score=3, seconds=1.0)
    first = Assignment.objects.filter(study=study, rater=busy).order_by("position").first()
    rating_submit(token=first.token, rater=busy, score=3, seconds=1.0)
    now = timezone.now()

    def reminded(hours_later):
        moment = now + timedelta(hours=hours_later)
        created = services.notify_periodic(now=moment)
        # As if the check ran then: its reminders carry that time.
        Notification.objects.filter(pk__in=[n.pk for n in created]).update(created_at=moment)
        return sorted((n.recipient_id, n.occurrence) for n in created)

    # Opened 30 h ago: the rater who never started is idle; one who just rated is not; one
    # who finished never is.
    assert reminded(0) == [(idle.pk, "reminder:1")]
    assert reminded(1) == []
    # A day later both unfinished raters are idle: the busy one's first, the idle one's last.
    assert reminded(25) == [(busy.pk, "reminder:1"), (idle.pk, "reminder:2")]
    assert reminded(26) == []
    assert reminded(60) == [(busy.pk, "reminder:2")]
    assert reminded(200) == []
    reminders = Notification.objects.filter(kind=NotificationKind.RATING_REMINDER)
    assert sorted(reminders.values_list("recipient_id", flat=True)) == sorted(
        [busy.pk, busy.pk, idle.pk, idle.pk]
    )
    waiting = Assignment.objects.filter(study=study, rater=busy, rating__isnull=True).count()
    assert f"{waiting} images still wait" in reminders.filter(recipient=busy).first().subject


def test_a_rater_who_turned_a_kind_off_is_not_told_of_it_and_the_others_are(batch, raters, client):
    client.force_login(raters[0])
    response = client.post("/notifications/preferences/", {"enabled": ["rating_reminder"]})
    assert response.status_code == 302
    study = open_study(batch, raters, sample_size=4)
    told = rows(NotificationKind.STUDY_ASSIGNED, object_key=f"study:{study.pk}")
    assert [n.recipient_id for n in told] == sorted(r.pk for r in raters[1:])
    # Reminders stayed on for them.
    type(study).objects.filter(pk=study.pk).update(opened_at=timezone.now() - timedelta(days=9))
    reminded = {n.recipient_id for n in services.notify_periodic(now=timezone.now())}
    assert reminded == {r.pk for r in raters}
