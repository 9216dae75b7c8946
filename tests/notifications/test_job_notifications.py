"""The engineer who launched a run or a batch is told how its job ended: once per attempt's
outcome, only them, and a mail server that is down never fails the work."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from jobs import lease, sweeper
from jobs.models import Job, JobState
from jobs.services import job_resume
from jobs.signals import job_finished
from notifications import services
from notifications.models import Notification
from notifications.services import notification_email_send
from tests.factories import JobFactory, RunFactory, make_user
from tests.notifications import failing_mail
from tests.notifications.conftest import with_mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def launcher():
    return with_mail(make_user("engineer"))


@pytest.fixture
def run(launcher):
    run = RunFactory()
    Job.objects.filter(pk=run.job_id).update(launched_by=launcher)
    return run


def told(**filters):
    return list(
        Notification.objects.filter(**filters)
        .order_by("id")
        .values_list("recipient_id", "kind", "occurrence")
    )


def fail(job_id, worker, error="CUDA out of memory"):
    job = lease.job_claim(job_id=job_id, worker=worker)
    assert job is not None
    lease.job_fail(job_id=job_id, worker=worker, error=error, attempt=job.attempt)
    return job.attempt


def test_a_failure_tells_the_launcher_once_and_a_failure_after_a_resume_tells_again(run, launcher):
    colleague = make_user("engineer")
    fail(run.job_id, "w1")
    assert told() == [(launcher.pk, "job_failed", "attempt:1")]
    n = Notification.objects.get()
    assert n.subject == f"FairSkin: run {run.pk} failed (attempt 1)"
    assert "CUDA out of memory" in n.body and n.link.endswith(f"/training/runs/{run.pk}/")

    # The same attempt's outcome told again (a signal repeated): nothing new.
    job_finished.send(sender=Job, job=Job.objects.get(pk=run.job_id), state=JobState.FAILED)
    assert len(told()) == 1

    # Resumed, it fails again: a new attempt, so a new event naming it.
    job_resume(job=Job.objects.get(pk=run.job_id), by=launcher)
    fail(run.job_id, "w2")
    assert told() == [
        (launcher.pk, "job_failed", "attempt:1"),
        (launcher.pk, "job_failed", "attempt:2"),
    ]
    # Resumed once more, it succeeds: told once.
    job_resume(job=Job.objects.get(pk=run.job_id), by=launcher)
    job = lease.job_claim(job_id=run.job_id, worker="w3")
    lease.job_succeed(job_id=job.pk, worker="w3", attempt=job.attempt)
    assert told(kind="job_succeeded") == [(launcher.pk, "job_succeeded", "attempt:3")]
    assert not Notification.objects.filter(recipient=colleague).exists()


def test_a_job_retried_after_its_worker_died_tells_only_its_one_success(run, launcher):
    lease.job_claim(job_id=run.job_id, worker="dead")
    Job.objects.filter(pk=run.job_id).update(lease_expires_at=timezone.now() - timedelta(1))
    job = lease.job_claim(job_id=run.job_id, worker="alive")
    assert job.attempt == 2
    lease.job_succeed(job_id=job.pk, worker="alive", attempt=2)
    assert told() == [(launcher.pk, "job_succeeded", "attempt:2")]


def test_the_sweep_giving_up_is_a_failure_told_once(run, launcher):
    Job.objects.filter(pk=run.job_id).update(attempt=5, attempt_limit=5)
    assert lease.job_claim(job_id=run.job_id, worker="w") is None  # spent: failed
    assert lease.job_claim(job_id=run.job_id, worker="w") is None
    assert told() == [(launcher.pk, "job_failed", "attempt:5")]
    assert "gave up" in Notification.objects.get().body


def test_the_sweep_giving_up_on_a_dead_workers_last_attempt_is_a_failure_told_once(run, launcher):
    lease.job_claim(job_id=run.job_id, worker="dead")
    expired = timezone.now() - timedelta(seconds=1)
    Job.objects.filter(pk=run.job_id).update(attempt_limit=1, lease_expires_at=expired)
    assert sweeper.job_sweep()["gave_up"] == 1
    assert sweeper.job_sweep()["gave_up"] == 0
    assert told() == [(launcher.pk, "job_failed", "attempt:1")]
    assert "workers stopped responding" in Notification.objects.get().body


def test_jobs_that_are_no_run_or_batch_and_cancellations_tell_nobody(run, launcher):
    check = JobFactory(launched_by=launcher)  # a worker check
    fail(check.pk, "w")
    batch_shard = JobFactory(kind="generation.shard", launched_by=launcher)
    job = lease.job_claim(job_id=batch_shard.pk, worker="w")
    lease.job_succeed(job_id=job.pk, worker="w")  # one shard of several: not the batch's end
    job = lease.job_claim(job_id=run.job_id, worker="w")
    lease.job_mark_cancelled(job_id=job.pk, worker="w")
    unowned = JobFactory(kind="training.run")  # launched by a command: nobody to tell
    fail(unowned.pk, "w")
    assert told() == []
    report = JobFactory(kind="generation.report", launched_by=launcher)
    job = lease.job_claim(job_id=report.pk, worker="w")
    lease.job_succeed(job_id=job.pk, worker="w")
    assert told() == [(launcher.pk, "job_succeeded", "attempt:1")]


def test_a_mail_server_that_is_down_never_fails_the_work_and_leaves_the_mail_unsent(
    run, launcher, settings, eager_celery, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "tests.notifications.failing_mail.DownEmailBackend"
    failing_mail.ATTEMPTS.clear()
    with django_capture_on_commit_callbacks(execute=True):
        fail(run.job_id, "w1")
    assert Job.objects.get(pk=run.job_id).state == JobState.FAILED
    n = Notification.objects.get()
    assert n.email_state == "pending" and n.email_sent_at is None
    assert "SMTPServerDisconnected" in n.email_error
    # The task retried up to its limit (immediately here: eager), then gave up.
    retries = settings.FAIRSKIN_NOTIFY_EMAIL_RETRIES
    assert n.email_attempts == len(failing_mail.ATTEMPTS) == retries + 1
    assert told() == [(launcher.pk, "job_failed", "attempt:1")]

    # The server is back: a later send goes out once, and a repeated one sends nothing.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert notification_email_send(notification_id=n.pk) == "sent"
    assert notification_email_send(notification_id=n.pk) == "skipped"
    assert [m.to for m in mail.outbox] == [[launcher.email]]


def test_a_broken_notification_never_fails_the_work(run, launcher, monkeypatch):
    def broken(**_):
        raise RuntimeError("notification bug")

    monkeypatch.setattr(services, "notify_job_finished", broken)
    fail(run.job_id, "w1")
    assert Job.objects.get(pk=run.job_id).state == JobState.FAILED
    assert Job.objects.get(pk=run.job_id).attempts.get().outcome == "failed"
    assert told() == []


def test_a_launcher_who_turned_failures_off_is_told_only_of_successes(run, launcher, client):
    client.force_login(launcher)
    client.post("/notifications/preferences/", {"enabled": ["job_succeeded"]})
    fail(run.job_id, "w1")
    assert told() == []
    job_resume(job=Job.objects.get(pk=run.job_id), by=launcher)
    job = lease.job_claim(job_id=run.job_id, worker="w2")
    lease.job_succeed(job_id=job.pk, worker="w2")
    assert told() == [(launcher.pk, "job_succeeded", "attempt:2")]


def test_the_database_refuses_a_second_row_for_one_occurrence(run, launcher):
    from django.db import IntegrityError, transaction

    fail(run.job_id, "w1")
    n = Notification.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(
            recipient=launcher, kind=n.kind, object_key=n.object_key, occurrence=n.occurrence
        )
    # Another recipient of the same occurrence is a row of its own.
    colleague = make_user("engineer")
    Notification.objects.create(
        recipient=colleague, kind=n.kind, object_key=n.object_key, occurrence=n.occurrence
    )
