"""The job lifecycle between the named behaviours: fenced writes, lost leases, the outbox,
attempt budgets, database outages, and owners that move with their jobs.

On PostgreSQL; the broker is the test Redis, or an address where nothing listens when a test
needs the broker away.
"""

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from fairskin_site.celery import app as celery_app
from jobs import lease, registry, runner, services, sweeper
from jobs.models import Job, JobAttempt, JobState
from review.models import Study, StudyState
from review.services.study import study_create
from tests.factories import JobFactory, make_user
from tests.review.conftest import batch, raters  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db
UNREACHABLE = "redis://127.0.0.1:9/0"


def expire(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def reset_producer_pool() -> None:
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
        celery_app._pool = None
    celery_app.amqp._producer_pool = None


def register_once(name: str, handler, **hooks) -> None:
    kind = registry._KINDS.get(name)
    if kind is None or kind.handler is not handler:
        registry._KINDS.pop(name, None)
        registry.register(name, queue="cpu", label=name, **hooks)(handler)


# --- attempt budgets ------------------------------------------------------------------------


def test_resume_after_the_attempts_are_spent_grants_a_new_budget_and_runs(settings):
    settings.FAIRSKIN_JOB_MAX_ATTEMPTS = 2
    job = JobFactory(params={"steps": 1, "pause_s": 0})
    for worker in ("w1", "w2"):  # two workers that died: the sweep gives up after two
        lease.job_claim(job_id=job.pk, worker=worker)
        expire(job)
    assert sweeper.job_sweep()["gave_up"] == 1
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "gave up after 2 attempts" in job.error

    services.job_resume(job=job)
    job.refresh_from_db()
    assert (job.attempt, job.attempt_limit, job.attempts_left) == (2, 4, 2)
    assert runner.execute_job(job_id=job.pk, worker="w3") == "succeeded"
    assert Job.objects.get(pk=job.pk).attempt == 3


def test_five_cancel_resume_cycles_still_run_the_job(settings):
    settings.FAIRSKIN_JOB_MAX_ATTEMPTS = 5
    job = JobFactory(params={"steps": 1, "pause_s": 0})
    for cycle in range(6):
        lease.job_claim(job_id=job.pk, worker=f"w{cycle}")
        services.job_cancel(job=Job.objects.get(pk=job.pk))
        lease.job_mark_cancelled(job_id=job.pk, worker=f"w{cycle}")
        services.job_resume(job=Job.objects.get(pk=job.pk))
    assert runner.execute_job(job_id=job.pk, worker="last") == "succeeded"
    assert Job.objects.get(pk=job.pk).attempt == 7


def test_a_queued_job_with_no_attempt_left_fails_with_the_reason_instead_of_waiting():
    job = JobFactory(attempt=3, attempt_limit=3)
    assert lease.job_claim(job_id=job.pk, worker="w") is None
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "all 3 attempts were used" in job.error and "Resume grants" in job.error


# --- fencing and lost leases -----------------------------------------------------------------


def test_a_fenced_write_by_an_attempt_that_lost_the_job_raises_and_changes_nothing():
    job = JobFactory()
    lease.job_claim(job_id=job.pk, worker="stalled")
    expire(job)
    lease.job_claim(job_id=job.pk, worker="successor")
    stalled = lease.JobLease(job_id=job.pk, worker="stalled")
    with pytest.raises(lease.LeaseLost):
        with stalled.hold():
            Job.objects.filter(pk=job.pk).update(title="written by the stalled attempt")
    job.refresh_from_db()
    assert job.title != "written by the stalled attempt"
    assert (job.worker, job.state) == ("successor", JobState.RUNNING)


def test_a_lost_lease_ends_the_attempt_silently_without_failing_anything():
    def loses_its_lease(job, progress):
        # Another worker takes over while this one is stalled...
        expire(job)
        lease.job_claim(job_id=job.pk, worker="successor")
        # ...and it then fails on something the successor changed.
        raise RuntimeError("the files moved under me")

    register_once(
        "test_loses_lease",
        loses_its_lease,
        on_failed=lambda job, error: pytest.fail("on_failed must not run"),
    )
    job = JobFactory(kind="test_loses_lease")
    assert runner.execute_job(job_id=job.pk, worker="stalled") == "lease-lost"
    job.refresh_from_db()
    assert (job.state, job.worker, job.error) == (JobState.RUNNING, "successor", "")
    assert not job.log_entries.filter(level="error").exists()
    first = JobAttempt.objects.get(job=job, number=1)
    assert "the files moved under me" in first.error  # the error is kept on its own attempt


def test_a_stalled_study_preparation_cannot_close_the_open_study(batch, raters):  # noqa: F811
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)
    lease.job_claim(job_id=study.job_id, worker="stalled")
    expire(Job.objects.get(pk=study.job_id))
    assert runner.execute_job(job_id=study.job_id, worker="successor") == "succeeded"
    study.refresh_from_db()
    assert study.state == StudyState.OPEN
    items = study.items.count()
    # The stalled attempt wakes and tries to fail the job and the study: nothing changes.
    with pytest.raises(lease.LeaseLost):
        lease.job_fail(job_id=study.job_id, worker="stalled", error="woke up late")
    study.refresh_from_db()
    assert study.state == StudyState.OPEN and study.items.count() == items


# --- the outbox -------------------------------------------------------------------------------


def test_follow_up_jobs_are_written_while_the_broker_is_away_and_relayed_when_it_is_back(
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    reset_producer_pool()
    monkeypatch.setattr(celery_app.conf, "broker_write_url", UNREACHABLE)
    monkeypatch.setattr(celery_app.conf, "broker_url", UNREACHABLE)
    with django_capture_on_commit_callbacks(execute=True):
        follow_up = services.job_create(
            kind="worker_check", require_broker=False, params={"steps": 1, "pause_s": 0}
        )
    follow_up.refresh_from_db()
    assert follow_up.state == JobState.QUEUED and follow_up.message_sent_at is None
    Job.objects.filter(pk=follow_up.pk).update(enqueued_at=timezone.now() - timedelta(seconds=5))
    assert sweeper.job_sweep()["relayed"] == 0  # still away: stays in the outbox
    assert Job.objects.get(pk=follow_up.pk).state == JobState.QUEUED

    monkeypatch.undo()
    reset_producer_pool()  # the pool made its connections for the unreachable address
    assert sweeper.job_sweep()["relayed"] == 1
    follow_up.refresh_from_db()
    assert follow_up.message_sent_at is not None and follow_up.celery_task_id


def test_a_user_launch_still_refuses_when_the_broker_is_away(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_write_url", UNREACHABLE)
    with pytest.raises(Exception, match="unreachable"):
        services.job_create(kind="worker_check", params={"steps": 1, "pause_s": 0})
    assert not Job.objects.exists()


# --- database outages and recorded errors -----------------------------------------------------


def test_a_database_error_re_queues_the_job_with_the_error_on_its_attempt():
    calls = []

    def database_goes_away_once(job, progress):
        calls.append(job.attempt)
        if job.attempt == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return {"attempt": job.attempt}

    register_once("test_db_blip", database_goes_away_once)
    job = JobFactory(kind="test_db_blip")
    assert runner.execute_job(job_id=job.pk, worker="w1") == "interrupted"
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.message_sent_at is None
    first = job.attempts.get(number=1)
    assert first.outcome == "interrupted"
    assert "OperationalError: server closed the connection" in first.error
    assert runner.execute_job(job_id=job.pk, worker="w2") == "succeeded"
    assert calls == [1, 2]


def test_database_errors_fail_the_job_once_the_budget_is_spent():
    def always_away(job, progress):
        raise OperationalError("the database system is shutting down")

    register_once("test_db_down", always_away)
    job = JobFactory(kind="test_db_down", attempt_limit=1)
    assert runner.execute_job(job_id=job.pk, worker="w1") == "failed"
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "shutting down" in job.error


# --- owners -----------------------------------------------------------------------------------


def test_the_sweep_giving_up_on_a_study_preparation_fails_the_study(batch, raters, settings):  # noqa: F811
    settings.FAIRSKIN_JOB_MAX_ATTEMPTS = 1
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)
    lease.job_claim(job_id=study.job_id, worker="dead")
    expire(Job.objects.get(pk=study.job_id))
    assert sweeper.job_sweep()["gave_up"] == 1
    study.refresh_from_db()
    assert study.state == StudyState.FAILED and "gave up" in study.error


def test_the_jobs_page_delegates_cancel_and_resume_to_the_study(batch, raters, client):  # noqa: F811
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)
    engineer = make_user("engineer", username="eng")
    client.force_login(engineer)
    response = client.post(f"/jobs/{study.job_id}/cancel/", follow=True)
    assert b"belongs to study" in response.content
    study.refresh_from_db()
    assert study.state == StudyState.FAILED and "cancelled by eng" in study.error
    assert Job.objects.get(pk=study.job_id).state == JobState.CANCELLED

    page = client.get(f"/jobs/{study.job_id}/")
    assert b"where it is cancelled and resumed" in page.content

    client.post(f"/jobs/{study.job_id}/resume/")
    study.refresh_from_db()
    assert study.state == StudyState.PREPARING
    assert runner.execute_job(job_id=study.job_id) == "succeeded"
    assert Study.objects.get(pk=study.pk).state == StudyState.OPEN


def test_a_cancelled_preparation_that_finishes_its_work_anyway_opens_nothing(batch, raters):  # noqa: F811
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)

    real = registry.get_kind("review.prepare").handler

    def cancelled_mid_way(job, progress):
        from review.services.study import study_preparation_cancel

        study_preparation_cancel(study=Study.objects.get(pk=study.pk))
        Job.objects.filter(pk=job.pk).update(cancel_requested=False)  # not noticed in time
        return real(job, progress)

    registry._KINDS["review.prepare"] = registry.JobKind(
        **{**registry.get_kind("review.prepare").__dict__, "handler": cancelled_mid_way}
    )
    try:
        outcome = runner.execute_job(job_id=study.job_id)
    finally:
        registry._KINDS["review.prepare"] = registry.JobKind(
            **{**registry.get_kind("review.prepare").__dict__, "handler": real}
        )
    study.refresh_from_db()
    job = Job.objects.get(pk=study.job_id)
    # The handler saw the study no longer preparing: the job ends cancelled, never succeeded
    # over a failed study, and no item or file was kept.
    assert outcome == "cancelled" and job.state == JobState.CANCELLED
    assert study.state == StudyState.FAILED and not study.items.exists()


def test_a_command_waiting_on_a_job_runs_it_again_after_a_database_outage():
    def away_on_the_first_attempt(job, progress):
        if job.attempt == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return {}

    register_once("test_db_blip_here", away_on_the_first_attempt)
    job = JobFactory(kind="test_db_blip_here")
    assert runner.run_here(job_id=job.pk) == "succeeded"
    assert list(Job.objects.get(pk=job.pk).attempts.values_list("outcome", flat=True)) == [
        "interrupted",
        "succeeded",
    ]


def test_follow_ups_of_a_job_a_command_runs_stay_with_the_command_until_a_user_resumes(
    django_capture_on_commit_callbacks,
):
    parent = services.job_create(
        kind="worker_check", enqueue=False, params={"steps": 1, "pause_s": 0}
    )
    with django_capture_on_commit_callbacks() as sent:
        child = services.job_create(
            kind="worker_check",
            parent=parent,
            require_broker=False,
            params={"steps": 1, "pause_s": 0},
        )
    assert sent == [] and child.runs_here and child.message_sent_at is not None
    lease.job_claim(job_id=child.pk, worker="w")
    lease.job_fail(job_id=child.pk, worker="w", error="boom")
    with django_capture_on_commit_callbacks() as sent:
        services.job_resume(job=Job.objects.get(pk=child.pk))
    child.refresh_from_db()
    assert len(sent) == 1 and not child.runs_here  # a user's resume hands it to the workers
    # ...and the rest of the tree: a later follow-up of the parent is sent, not left behind.
    assert not Job.objects.get(pk=parent.pk).runs_here
    with django_capture_on_commit_callbacks() as sent:
        later = services.job_create(
            kind="worker_check",
            parent=parent,
            require_broker=False,
            params={"steps": 1, "pause_s": 0},
        )
    assert len(sent) == 1 and not later.runs_here
