"""Writes on jobs. Every state change is a conditional UPDATE checked against the transition
table, so two workers (or a worker and the sweep) can never both act on one job.

Messages go out through an outbox: the job row is the message. It is written in the same
transaction as the state change that calls for it and sent after commit; if the broker does
not take it, the row stays queued with no ``message_sent_at`` and the sweep relays it until the
broker is back. So a broker outage delays follow-up work but can never fail work that is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class JobLease:
    """What a running attempt holds: domain writes made under ``hold()`` are fenced by it."""

    job_id: int
    worker: str

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A transaction that commits only while this attempt still holds the job.

        The conditional UPDATE renews the lease and locks the job row until commit, so the
        sweep and a rival claim wait for it: a stalled attempt that wakes after its job was
        handed on raises LeaseLost here and writes nothing.
        """
        with transaction.atomic():
            now = timezone.now()
            held = Job.objects.filter(pk=self.job_id, worker=self.worker, state=JobState.RUNNING)
            if held.update(heartbeat_at=now,
                           lease_expires_at=now + timedelta(seconds=_lease_seconds())) != 1:
                raise LeaseLost(f"job {self.job_id} is no longer held by {self.worker}")
            yield


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
    require_broker: bool = True,
) -> Job:
    """Create a queued job and send it to its queue once the transaction commits.

    A launch by a user refuses (creating nothing) when the kind is unknown or the broker
    cannot be reached, so a user never ends up with a job that silently never starts. Work
    that hands on to follow-up jobs passes ``require_broker=False``: the follow-up is written
    with the hand-over and relayed by the outbox whenever the broker is back. With
    ``enqueue=False`` the caller runs the job itself (a command's --wait); if that process
    dies, the sweep sends the job to a worker.
    """
    job_kind = registry.get_kind(kind)
    if enqueue and require_broker:
        broker_check()
    job = Job.objects.create(
        kind=kind,
        title=title or job_kind.label,
        queue=queue or job_kind.queue,
        params=params or {},
        launched_by=launched_by if getattr(launched_by, "pk", None) else None,
        parent=parent,
        enqueued_at=timezone.now(),
        attempt_limit=settings.FAIRSKIN_JOB_MAX_ATTEMPTS,
    )
    if enqueue:
        job_log(job_id=job.pk, message=f"queued on the {job.queue} queue")
        job_enqueue(job=job)
    else:
        # Nobody needs to be told: mark it sent so the outbox leaves it to the command. If the
        # command dies, the stale re-send hands it to a worker.
        Job.objects.filter(pk=job.pk).update(message_sent_at=job.enqueued_at)
        job_log(job_id=job.pk, message="running in the foreground of the launching command")
    return job


def job_enqueue(*, job: Job) -> None:
    """Send the job's message after the surrounding transaction commits."""
    job_id, queue = job.pk, job.queue
    transaction.on_commit(lambda: _send(job_id=job_id, queue=queue))


def _send(*, job_id: int, queue: str) -> bool:
    """Hand the job's message to the broker. Never raises: a message the broker did not take
    stays in the outbox (``message_sent_at`` empty) for the sweep to relay."""
    from celery import current_app

    try:
        # A short retry lets kombu re-establish a connection that died in an outage; a broker
        # still away costs about a second here, then the outbox takes over.
        message = current_app.send_task(
            "jobs.run", kwargs={"job_id": job_id}, queue=queue, retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                          "interval_max": 1},
        )
    except Exception as exc:  # the broker is unreachable: the job stays queued, unsent
        logger.warning("job %s: the broker did not take its message (%s); the sweep will "
                       "send it again", job_id, exc)
        return False
    now = timezone.now()
    Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        celery_task_id=message.id, message_sent_at=now, updated_at=now
    )
    return True


def job_claim(*, job_id: int, worker: str) -> Job | None:
    """Take the job for ``worker`` if it is queued, or running under an expired lease.

    Returns the claimed job, or None when another worker holds a live lease, the job is
    finished or cancelled, or it has used up its attempts (a queued job that has is failed
    with that reason, so it never sits in the queue for ever).
    """
    now = timezone.now()
    claimable = Q(state=JobState.QUEUED, cancel_requested=False) | Q(
        state=JobState.RUNNING, lease_expires_at__lt=now
    )
    with transaction.atomic():
        updated = (
            Job.objects.filter(pk=job_id, attempt__lt=F("attempt_limit"))
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
            _fail_if_spent(job_id=job_id, now=now)
            return None
        job = Job.objects.get(pk=job_id)
        _close_open_attempts(job_id=job_id, outcome="lost", error="worker stopped renewing")
        JobAttempt.objects.create(job=job, number=job.attempt, worker=worker, started_at=now)
        job_log(job_id=job_id, attempt=job.attempt, message=f"attempt {job.attempt} on {worker}")
    return job


def _fail_if_spent(*, job_id: int, now: Any) -> None:
    """A queued (or abandoned running) job with no attempt left fails, with the reason."""
    spent = Job.objects.filter(pk=job_id, attempt__gte=F("attempt_limit")).filter(
        Q(state=JobState.QUEUED) | Q(state=JobState.RUNNING, lease_expires_at__lt=now)
    )
    job = spent.first()
    if job is None:
        return
    error = (f"gave up: all {job.attempt} attempts were used; Resume grants "
             f"{settings.FAIRSKIN_JOB_MAX_ATTEMPTS} more")
    if spent.update(state=JobState.FAILED, finished_at=now, worker="", error=error,
                    lease_expires_at=None, updated_at=now):
        _close_open_attempts(job_id=job_id, outcome="lost", error="worker stopped renewing")
        job_log(job_id=job_id, level="error", message=error)
        _owner_failed(job=job, error=error)


def _owner_failed(*, job: Job, error: str) -> None:
    hook = registry.get_kind(job.kind).on_failed
    if hook is not None:
        hook(job, error)


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
    phase: str | None = None,
) -> bool:
    """Extend the lease (and record progress). Returns whether cancellation was requested.

    ``phase`` starts a new phase of the work now (its name shows on the pages; its ETA counts
    from here). Raises LeaseLost if this worker no longer holds the job.
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
    if phase is not None:
        fields.update(progress_phase=phase[:120], phase_started_at=now,
                      phase_start_done=max(0, done or 0))
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
        if to_state == JobState.FAILED:
            _owner_failed(job=Job.objects.get(pk=job_id), error=fields["error"])


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
    """Queue a new attempt of a failed or cancelled job (handlers resume from checkpoints).

    A user's resume grants a fresh budget of attempts, so a job the sweep gave up on, or one
    cancelled and resumed many times, really runs again.
    """
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
            message_sent_at=None,
            attempt_limit=F("attempt") + settings.FAIRSKIN_JOB_MAX_ATTEMPTS,
            progress_phase="",
            phase_started_at=None,
        )
        if updated != 1:
            raise InvalidTransition("the job changed state meanwhile; reload and try again")
        job_log(job_id=job.pk, message=f"resumed by {getattr(by, 'username', 'system')}")
        job.refresh_from_db()
        job_enqueue(job=job)
    return job


def job_user_cancel(*, job: Job, by: Any = None) -> str:
    """Cancel as a user asked on the jobs page or admin: through the job's owner when it has
    one (a shard cancels its batch), so the owner never waits on a job nobody runs."""
    owner = registry.job_owner(job)
    if owner is None:
        job_cancel(job=job, by=by)
        return f"Cancellation of job {job.pk} requested."
    owner.cancel(by)
    return f"Job {job.pk} belongs to {owner.label}: {owner.label} was cancelled."


def job_user_resume(*, job: Job, by: Any = None) -> str:
    owner = registry.job_owner(job)
    if owner is None:
        job = job_resume(job=job, by=by)
        return (f"Job {job.pk} queued for attempt {job.attempt + 1} "
                f"({job.attempts_left} attempts granted).")
    owner.resume(by)
    return f"Job {job.pk} belongs to {owner.label}: {owner.label} was resumed."


def job_release(*, job_id: int, worker: str, error: str, attempt: int = 0) -> str:
    """Hand a job back to the queue after an error that says nothing about the work (the
    database went away under it), recording that error on the attempt. Fails the job instead
    when no attempt is left. Returns the job's new state."""
    now = timezone.now()
    with transaction.atomic():
        held = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING)
        job = held.select_for_update().first()
        if job is None:
            raise LeaseLost(f"job {job_id} is no longer held by {worker}")
        if job.attempt >= job.attempt_limit:
            _finish(job_id=job_id, worker=worker, to_state=JobState.FAILED,
                    error=f"{error} (after {job.attempt} attempts)")
            job_log(job_id=job_id, attempt=attempt, level="error", message=f"failed: {error}")
            return JobState.FAILED
        held.update(state=JobState.QUEUED, worker="", lease_expires_at=None, enqueued_at=now,
                    message_sent_at=None, updated_at=now)
        _close_open_attempts(job_id=job_id, outcome="interrupted", error=error)
        job_log(job_id=job_id, attempt=attempt, level="warning",
                message=f"interrupted: {error}; re-queued")
        job_enqueue(job=job)
    return JobState.QUEUED


def job_attempt_note_error(*, job_id: int, attempt: int, error: str) -> None:
    """Record the error an attempt saw after it lost the job (the sweep closed it first)."""
    JobAttempt.objects.filter(job_id=job_id, number=attempt).update(
        error=f"{error} (recorded after the lease expired)"[:2000]
    )


def job_sweep() -> dict[str, int]:
    """Recover jobs whose worker died, and relay messages the broker never took or lost.

    Runs in its own thread of the beat process (jobs.sweeper), never behind ordinary work in
    a queue, so recovery time does not depend on queue depth. Safe to run concurrently: every
    change is a conditional update.
    """
    now = timezone.now()
    counts = {"requeued": 0, "gave_up": 0, "cancelled": 0, "resent": 0, "relayed": 0}
    expired = Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now)
    for job in expired.only("pk", "attempt", "attempt_limit", "cancel_requested", "queue",
                            "kind"):
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
            elif job.attempt >= job.attempt_limit:
                error = f"gave up after {job.attempt} attempts whose workers stopped responding"
                if still_expired.update(
                    state=JobState.FAILED, finished_at=now, worker="", error=error
                ):
                    _close_open_attempts(job_id=job.pk, outcome="lost", error="lease expired")
                    job_log(job_id=job.pk, level="error", message=error)
                    _owner_failed(job=job, error=error)
                    counts["gave_up"] += 1
            elif still_expired.update(state=JobState.QUEUED, worker="", enqueued_at=now,
                                      message_sent_at=None):
                _close_open_attempts(job_id=job.pk, outcome="lost", error="lease expired")
                job_log(job_id=job.pk, level="warning", message="lease expired; re-queued")
                job_enqueue(job=job)
                counts["requeued"] += 1
    # The outbox: messages the broker did not take when they were written.
    # Jobs queued in the last second are left to the send after their own commit.
    unsent = Job.objects.filter(state=JobState.QUEUED, message_sent_at__isnull=True,
                                cancel_requested=False).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - timedelta(seconds=1)))
    for job in unsent.only("pk", "queue").order_by("created_at")[:1000]:
        if _send(job_id=job.pk, queue=job.queue):
            counts["relayed"] += 1
        else:
            break  # the broker is still away; the next sweep tries again
    # Messages the broker took and then lost (a Redis restart without persistence).
    stale_before = now - timedelta(seconds=settings.FAIRSKIN_JOB_REQUEUE_STALE_SECONDS)
    stale = Job.objects.filter(
        state=JobState.QUEUED, cancel_requested=False, message_sent_at__lt=stale_before
    )
    for job in stale.only("pk", "queue")[:1000]:
        if _send(job_id=job.pk, queue=job.queue):
            counts["resent"] += 1
        else:
            break
    return counts
