from datetime import timedelta

import pytest
from django.utils import timezone

from fairskin_site.celery import app as celery_app
from jobs import lease, registry, runner, services, sweeper
from jobs.broker import BrokerUnavailable
from jobs.models import Job, JobAttempt, JobState
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def expire_lease(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_claim_takes_a_queued_job_and_opens_attempt_one():
    job = JobFactory()
    claimed = lease.job_claim(job_id=job.pk, worker="w1")
    assert claimed.state == JobState.RUNNING
    assert claimed.attempt == 1
    assert claimed.worker == "w1"
    assert claimed.lease_expires_at > timezone.now()
    assert list(claimed.attempts.values_list("number", "worker", "outcome")) == [(1, "w1", "")]


def test_second_claim_of_a_live_lease_is_refused():
    job = JobFactory()
    lease.job_claim(job_id=job.pk, worker="w1")
    assert lease.job_claim(job_id=job.pk, worker="w2") is None
    job.refresh_from_db()
    assert (job.worker, job.attempt) == ("w1", 1)


def test_expired_lease_is_reclaimed_as_a_new_attempt_and_old_worker_is_locked_out():
    job = JobFactory()
    lease.job_claim(job_id=job.pk, worker="w1")
    expire_lease(job)
    claimed = lease.job_claim(job_id=job.pk, worker="w2")
    assert (claimed.worker, claimed.attempt) == ("w2", 2)
    first, second = JobAttempt.objects.filter(job=job).order_by("number")
    assert first.outcome == "lost" and first.finished_at is not None
    assert second.worker == "w2" and second.outcome == ""
    with pytest.raises(lease.LeaseLost):
        lease.job_heartbeat(job_id=job.pk, worker="w1", done=1, total=2)
    with pytest.raises(lease.LeaseLost):
        lease.job_succeed(job_id=job.pk, worker="w1")


def test_finished_and_cancelled_jobs_cannot_be_claimed():
    done = JobFactory(state=JobState.SUCCEEDED)
    cancelled = JobFactory(state=JobState.CANCELLED)
    assert lease.job_claim(job_id=done.pk, worker="w") is None
    assert lease.job_claim(job_id=cancelled.pk, worker="w") is None


def test_claim_refused_once_attempts_are_used_up(settings):
    settings.FAIRSKIN_JOB_MAX_ATTEMPTS = 2
    job = JobFactory(attempt=2)
    assert lease.job_claim(job_id=job.pk, worker="w") is None


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (JobState.SUCCEEDED, services.job_resume),
        (JobState.RUNNING, services.job_resume),
        (JobState.QUEUED, services.job_resume),
        (JobState.SUCCEEDED, services.job_cancel),
        (JobState.FAILED, services.job_cancel),
    ],
)
def test_invalid_transitions_raise_and_change_nothing(state, action):
    job = JobFactory(state=state)
    with pytest.raises(lease.InvalidTransition):
        action(job=job)
    job.refresh_from_db()
    assert job.state == state


def test_finishing_a_job_that_is_not_running_raises():
    job = JobFactory()
    with pytest.raises(lease.LeaseLost):
        lease.job_fail(job_id=job.pk, worker="nobody", error="x")
    with pytest.raises(lease.InvalidTransition):
        lease._finish(job_id=job.pk, worker="nobody", to_state=JobState.QUEUED + "x")


def test_cancel_queued_is_immediate_and_running_is_requested():
    queued = JobFactory()
    services.job_cancel(job=queued)
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED
    running = JobFactory()
    lease.job_claim(job_id=running.pk, worker="w")
    running.refresh_from_db()
    services.job_cancel(job=running)
    running.refresh_from_db()
    assert running.state == JobState.RUNNING and running.cancel_requested
    assert lease.job_heartbeat(job_id=running.pk, worker="w") is True


def test_resume_of_failed_job_queues_and_next_claim_is_attempt_two(
    django_capture_on_commit_callbacks,
):
    job = JobFactory()
    lease.job_claim(job_id=job.pk, worker="w")
    lease.job_fail(job_id=job.pk, worker="w", error="boom")
    job.refresh_from_db()
    with django_capture_on_commit_callbacks() as callbacks:
        services.job_resume(job=job)
    assert len(callbacks) == 1  # the message is sent only after commit
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.error == ""
    assert lease.job_claim(job_id=job.pk, worker="w2").attempt == 2


def test_sweep_requeues_expired_gives_up_after_max_and_cancels_requested(settings):
    settings.FAIRSKIN_JOB_MAX_ATTEMPTS = 3
    dead, exhausted, stopping, alive = (JobFactory() for _ in range(4))
    for job in (dead, exhausted, stopping, alive):
        lease.job_claim(job_id=job.pk, worker="w")
    Job.objects.filter(pk=exhausted.pk).update(attempt=3)
    Job.objects.filter(pk=stopping.pk).update(cancel_requested=True)
    for job in (dead, exhausted, stopping):
        expire_lease(job)
    counts = sweeper.job_sweep()
    assert counts == {"requeued": 1, "gave_up": 1, "cancelled": 1, "resent": 0, "relayed": 0}
    states = dict(Job.objects.values_list("pk", "state"))
    assert states[dead.pk] == JobState.QUEUED
    assert states[exhausted.pk] == JobState.FAILED
    assert states[stopping.pk] == JobState.CANCELLED
    assert states[alive.pk] == JobState.RUNNING
    assert JobAttempt.objects.get(job=dead, number=1).outcome == "lost"


def test_sweep_resends_queued_jobs_whose_message_was_lost(settings):
    settings.FAIRSKIN_JOB_REQUEUE_STALE_SECONDS = 60
    sent_long_ago = timezone.now() - timedelta(minutes=5)
    stale = JobFactory(enqueued_at=sent_long_ago, message_sent_at=sent_long_ago)
    fresh = JobFactory(enqueued_at=timezone.now(), message_sent_at=timezone.now())
    assert sweeper.job_sweep()["resent"] == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.message_sent_at > fresh.message_sent_at - timedelta(seconds=5)
    assert sweeper.job_sweep()["resent"] == 0  # sent again: stale only after another wait


def test_execute_job_records_handler_failure_with_its_message():
    @registry.register("test_explodes", queue="cpu", label="explodes")
    def explodes(job, progress):
        progress.update(1, 3, "first third")
        raise RuntimeError("the flux capacitor is empty")

    job = JobFactory(kind="test_explodes")
    assert runner.execute_job(job_id=job.pk, worker="w") == "failed"
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error == "RuntimeError: the flux capacitor is empty"
    assert (job.progress_done, job.progress_total) == (1, 3)
    assert job.log_entries.filter(message__contains="Traceback").exists()
    assert job.attempts.get().outcome == "failed"


def test_execute_job_honours_cancellation_at_the_next_progress_report():
    @registry.register("test_cancels_itself", queue="cpu", label="cancels")
    def cancels_itself(job, progress):
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        for i in range(10):
            progress.update(i + 1, 10)
        raise AssertionError("should have been cancelled")

    job = JobFactory(kind="test_cancels_itself")
    assert runner.execute_job(job_id=job.pk, worker="w") == "cancelled"
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED


def test_worker_check_handler_runs_storage_and_database_roundtrips():
    job = JobFactory(params={"steps": 3, "pause_s": 0})
    assert runner.execute_job(job_id=job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total) == (3, 3)
    assert job.result["storage"] == "FileSystemStorage"


def test_worker_check_rejects_bad_parameters():
    job = JobFactory(params={"steps": 0, "pause_s": 0})
    assert runner.execute_job(job_id=job.pk) == "failed"
    job.refresh_from_db()
    assert "steps must be between" in job.error


def test_create_refuses_unknown_kind_and_creates_nothing():
    with pytest.raises(LookupError):
        services.job_create(kind="no_such_kind")
    assert Job.objects.count() == 0


def test_create_with_unreachable_broker_raises_and_creates_nothing(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_write_url", "redis://127.0.0.1:9/0")
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        services.job_create(kind="worker_check", params={"steps": 1, "pause_s": 0})
    assert Job.objects.count() == 0
