"""Writes on jobs. Every state change is a conditional UPDATE checked against the transition
table, so two workers (or a worker and the sweep) can never both act on one job."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import registry
from jobs.broker import broker_check
from jobs.models import ALLOWED_TRANSITIONS, Job, JobAttempt, JobLogEntry, JobState

logger = logging.getLogger(__name__)


class InvalidTransition(Exception):
    """A job was asked to move to a state its current state does not allow."""


class LeaseLost(Exception):
    """The worker no longer holds the job: the lease expired and someone else took over,
    or the job was finished elsewhere. The worker must stop without writing results."""


def _check_transition(from_state: str, to_state: str) -> None:
    if to_state not in ALLOWED_TRANSITIONS[from_state]:
        raise InvalidTransition(f"a {from_state} job cannot become {to_state}")


def _lease_seconds() -> int:
    return settings.FAIRSKIN_JOB_LEASE_SECONDS


def job_log(*, job_id: int, message: str, level: str = "info", attempt: int = 0) -> None:
    JobLogEntry.objects.create(job_id=job_id, message=message, level=level, attempt=attempt)


def job_create(
    *,
    kind: str,
    params: dict[str, Any] | None = None,
    title: str = "",
    launched_by: Any = None,
    queue: str | None = None,
    parent: Job | None = None,
    enqueue: bool = True,
) -> Job:
    """Create a queued job and send it to its queue once the transaction commits.

    Refuses (creating nothing) when the kind is unknown or the broker cannot be reached, so a
    user never ends up with a job that silently never starts. With ``enqueue=False`` the
    caller runs the job itself (a command's --wait); if that process dies, the sweep sends the
    job to a worker.
    """
    job_kind = registry.get_kind(kind)
    if enqueue:
        broker_check()
    job = Job.objects.create(
        kind=kind,
        title=title or job_kind.label,
        queue=queue or job_kind.queue,
        params=params or {},
        launched_by=launched_by if getattr(launched_by, "pk", None) else None,
        parent=parent,
        enqueued_at=timezone.now(),
    )
    if enqueue:
        job_log(job_id=job.pk, message=f"queued on the {job.queue} queue")
        job_enqueue(job=job)
    else:
        job_log(job_id=job.pk, message="running in the foreground of the launching command")
    return job


def job_enqueue(*, job: Job) -> None:
    """Send the job's message after the surrounding transaction commits."""
    job_id, queue = job.pk, job.queue
    transaction.on_commit(lambda: _send(job_id=job_id, queue=queue))


def _send(*, job_id: int, queue: str) -> None:
    from jobs.tasks import run_job

    try:
        message = run_job.apply_async(kwargs={"job_id": job_id}, queue=queue, retry=False)
    except Exception as exc:  # the broker went away between the check and the commit
        logger.exception("could not enqueue job %s", job_id)
        Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
            state=JobState.FAILED,
            error=f"Could not reach the task broker to queue this job ({exc}). "
            "Resume it once the broker is back.",
            finished_at=timezone.now(),
        )
        return
    Job.objects.filter(pk=job_id).update(celery_task_id=message.id, enqueued_at=timezone.now())


def job_claim(*, job_id: int, worker: str) -> Job | None:
    """Take the job for ``worker`` if it is queued, or running under an expired lease.

    Returns the claimed job, or None when another worker holds a live lease, the job is
    finished or cancelled, or it has used up its attempts.
    """
    now = timezone.now()
    claimable = Q(state=JobState.QUEUED, cancel_requested=False) | Q(
        state=JobState.RUNNING, lease_expires_at__lt=now
    )
    with transaction.atomic():
        updated = (
            Job.objects.filter(pk=job_id, attempt__lt=settings.FAIRSKIN_JOB_MAX_ATTEMPTS)
            .filter(claimable)
            .update(
                state=JobState.RUNNING,
                attempt=F("attempt") + 1,
                worker=worker,
                lease_expires_at=now + timedelta(seconds=_lease_seconds()),
                heartbeat_at=now,
                started_at=now,
                finished_at=None,
                error="",
                updated_at=now,
            )
        )
        if updated != 1:
            return None
        job = Job.objects.get(pk=job_id)
        _close_open_attempts(job_id=job_id, outcome="lost", error="worker stopped renewing")
        JobAttempt.objects.create(job=job, number=job.attempt, worker=worker, started_at=now)
        job_log(job_id=job_id, attempt=job.attempt, message=f"attempt {job.attempt} on {worker}")
    return job


def _close_open_attempts(*, job_id: int, outcome: str, error: str = "") -> None:
    JobAttempt.objects.filter(job_id=job_id, finished_at__isnull=True).update(
        finished_at=timezone.now(), outcome=outcome, error=error
    )


def job_heartbeat(
    *,
    job_id: int,
    worker: str,
    done: int | None = None,
    total: int | None = None,
    message: str | None = None,
) -> bool:
    """Extend the lease (and record progress). Returns whether cancellation was requested.

    Raises LeaseLost if this worker no longer holds the job.
    """
    now = timezone.now()
    fields: dict[str, Any] = {
        "heartbeat_at": now,
        "lease_expires_at": now + timedelta(seconds=_lease_seconds()),
    }
    if done is not None:
        fields["progress_done"] = max(0, done)
    if total is not None:
        fields["progress_total"] = max(0, total)
    if message is not None:
        fields["progress_message"] = message[:300]
    held = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING)
    if held.update(**fields) != 1:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return held.filter(cancel_requested=True).exists()


def _finish(*, job_id: int, worker: str, to_state: str, **fields: Any) -> None:
    _check_transition(JobState.RUNNING, to_state)
    now = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING).update(
            state=to_state, finished_at=now, lease_expires_at=None, updated_at=now, **fields
        )
        if updated != 1:
            raise LeaseLost(f"job {job_id} is no longer held by {worker}")
        _close_open_attempts(job_id=job_id, outcome=to_state, error=fields.get("error", ""))


def job_succeed(
    *, job_id: int, worker: str, result: dict[str, Any] | None = None, attempt: int = 0
) -> None:
    _finish(job_id=job_id, worker=worker, to_state=JobState.SUCCEEDED, result=result or {})
    job_log(job_id=job_id, attempt=attempt, message="succeeded")


def job_fail(*, job_id: int, worker: str, error: str, attempt: int = 0) -> None:
    _finish(job_id=job_id, worker=worker, to_state=JobState.FAILED, error=error)
    job_log(job_id=job_id, attempt=attempt, level="error", message=f"failed: {error}")


def job_mark_cancelled(*, job_id: int, worker: str, attempt: int = 0) -> None:
    _finish(job_id=job_id, worker=worker, to_state=JobState.CANCELLED)
    job_log(job_id=job_id, attempt=attempt, message="cancelled")


def job_cancel(*, job: Job, by: Any = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next progress report."""
    who = getattr(by, "username", "system")
    if job.state == JobState.QUEUED:
        _check_transition(JobState.QUEUED, JobState.CANCELLED)
        if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
            state=JobState.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        ):
            job_log(job_id=job.pk, message=f"cancelled by {who} before it started")
            job.refresh_from_db()
            return job
        job.refresh_from_db()  # a worker claimed it meanwhile: fall through to running
    if job.state == JobState.RUNNING:
        Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True)
        job_log(job_id=job.pk, message=f"cancellation requested by {who}")
        job.refresh_from_db()
        return job
    raise InvalidTransition(f"a {job.state} job cannot be cancelled")


def job_resume(*, job: Job, by: Any = None) -> Job:
    """Queue a new attempt of a failed or cancelled job (handlers resume from checkpoints)."""
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise InvalidTransition(f"only failed or cancelled jobs can be resumed, not {job.state}")
    broker_check()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, state=job.state).update(
            state=JobState.QUEUED,
            cancel_requested=False,
            error="",
            finished_at=None,
            enqueued_at=timezone.now(),
        )
        if updated != 1:
            raise InvalidTransition("the job changed state meanwhile; reload and try again")
        job_log(job_id=job.pk, message=f"resumed by {getattr(by, 'username', 'system')}")
        job.refresh_from_db()
        job_enqueue(job=job)
    return job


def job_sweep() -> dict[str, int]:
    """Recover jobs whose worker died, and re-send queued jobs whose message was lost.

    Runs periodically under Celery beat, so recovery never waits on the broker's redelivery
    timeout (an hour by default on Redis).
    """
    now = timezone.now()
    counts = {"requeued": 0, "gave_up": 0, "cancelled": 0, "resent": 0}
    expired = Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now)
    for job in expired.only("pk", "attempt", "cancel_requested", "queue"):
        # Each update repeats the expiry condition: a worker that renewed meanwhile keeps it.
        still_expired = Job.objects.filter(
            pk=job.pk, state=JobState.RUNNING, lease_expires_at__lt=now
        )
        with transaction.atomic():
            if job.cancel_requested:
                if still_expired.update(state=JobState.CANCELLED, finished_at=now, worker=""):
                    _close_open_attempts(job_id=job.pk, outcome="cancelled")
                    job_log(job_id=job.pk, message="cancelled (its worker had stopped)")
                    counts["cancelled"] += 1
            elif job.attempt >= settings.FAIRSKIN_JOB_MAX_ATTEMPTS:
                error = f"gave up after {job.attempt} attempts whose workers stopped responding"
                if still_expired.update(
                    state=JobState.FAILED, finished_at=now, worker="", error=error
                ):
                    _close_open_attempts(job_id=job.pk, outcome="lost", error=error)
                    job_log(job_id=job.pk, level="error", message=error)
                    counts["gave_up"] += 1
            elif still_expired.update(state=JobState.QUEUED, worker="", enqueued_at=now):
                _close_open_attempts(job_id=job.pk, outcome="lost", error="lease expired")
                job_log(job_id=job.pk, level="warning", message="lease expired; re-queued")
                job_enqueue(job=job)
                counts["requeued"] += 1
    stale_before = now - timedelta(seconds=settings.FAIRSKIN_JOB_REQUEUE_STALE_SECONDS)
    stale = Job.objects.filter(
        state=JobState.QUEUED, cancel_requested=False, enqueued_at__lt=stale_before
    )
    for job in stale.only("pk", "queue"):
        if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(enqueued_at=now):
            job_enqueue(job=job)
            counts["resent"] += 1
    return counts
