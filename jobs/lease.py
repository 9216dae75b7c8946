"""The worker-facing lease protocol: claim a job, renew its lease, fence domain writes with
it, and finish it. Every state change is a conditional UPDATE checked against the transition
table, so two workers (or a worker and the sweep) can never both act on one job.

An attempt that lost its lease (it stalled past it, or the job was finished elsewhere) gets
LeaseLost from every call here and must stop without writing anything more.
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

from fairskin.errors import ApplicationError
from jobs import registry
from jobs.models import ALLOWED_TRANSITIONS, Job, JobAttempt, JobLogEntry, JobState
from jobs.signals import job_finished

logger = logging.getLogger(__name__)


class InvalidTransition(ApplicationError):
    """A job was asked to move to a state its current state does not allow."""

    status = 409


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
            if (
                held.update(
                    heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds())
                )
                != 1
            ):
                raise LeaseLost(f"job {self.job_id} is no longer held by {self.worker}")
            yield


def check_transition(from_state: str, to_state: str) -> None:
    if to_state not in ALLOWED_TRANSITIONS[from_state]:
        raise InvalidTransition(f"a {from_state} job cannot become {to_state}")


def lease_seconds() -> int:
    return settings.FAIRSKIN_JOB_LEASE_SECONDS


def job_log(*, job_id: int, message: str, level: str = "info", attempt: int = 0) -> None:
    JobLogEntry.objects.create(job_id=job_id, message=message, level=level, attempt=attempt)


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
                lease_expires_at=now + timedelta(seconds=lease_seconds()),
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
        close_open_attempts(job_id=job_id, outcome="lost", error="worker stopped renewing")
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
    error = (
        f"gave up: all {job.attempt} attempts were used; Resume grants "
        f"{settings.FAIRSKIN_JOB_MAX_ATTEMPTS} more"
    )
    if spent.update(
        state=JobState.FAILED,
        finished_at=now,
        worker="",
        error=error,
        lease_expires_at=None,
        updated_at=now,
    ):
        close_open_attempts(job_id=job_id, outcome="lost", error="worker stopped renewing")
        job_log(job_id=job_id, level="error", message=error)
        owner_failed(job=job, error=error)


def owner_failed(*, job: Job, error: str) -> None:
    """In the transaction that failed the job (its worker, or the sweep giving up): the
    owner's hook, then whoever listens to job_finished."""
    hook = registry.get_kind(job.kind).on_failed
    if hook is not None:
        hook(job, error)
    job_finished.send(sender=Job, job=job, state=JobState.FAILED)


def close_open_attempts(*, job_id: int, outcome: str, error: str = "") -> None:
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
        "lease_expires_at": now + timedelta(seconds=lease_seconds()),
    }
    if done is not None:
        fields["progress_done"] = max(0, done)
    if total is not None:
        fields["progress_total"] = max(0, total)
    if message is not None:
        fields["progress_message"] = message[:300]
    if phase is not None:
        fields.update(
            progress_phase=phase[:120], phase_started_at=now, phase_start_done=max(0, done or 0)
        )
    held = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING)
    if held.update(**fields) != 1:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return held.filter(cancel_requested=True).exists()


def _finish(*, job_id: int, worker: str, to_state: str, **fields: Any) -> None:
    check_transition(JobState.RUNNING, to_state)
    now = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING).update(
            state=to_state, finished_at=now, lease_expires_at=None, updated_at=now, **fields
        )
        if updated != 1:
            raise LeaseLost(f"job {job_id} is no longer held by {worker}")
        close_open_attempts(job_id=job_id, outcome=to_state, error=fields.get("error", ""))
        if to_state == JobState.FAILED:
            owner_failed(job=Job.objects.get(pk=job_id), error=fields["error"])
        else:
            job_finished.send(sender=Job, job=Job.objects.get(pk=job_id), state=to_state)


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


def job_release(*, job_id: int, worker: str, error: str, attempt: int = 0) -> str:
    """Hand a job back to the queue after an error that says nothing about the work (the
    database went away under it), recording that error on the attempt. Fails the job instead
    when no attempt is left. Returns the job's new state; the caller sends a re-queued job's
    message (jobs.services.job_enqueue), or the sweep relays it."""
    now = timezone.now()
    with transaction.atomic():
        held = Job.objects.filter(pk=job_id, worker=worker, state=JobState.RUNNING)
        job = held.select_for_update().first()
        if job is None:
            raise LeaseLost(f"job {job_id} is no longer held by {worker}")
        if job.attempt >= job.attempt_limit:
            _finish(
                job_id=job_id,
                worker=worker,
                to_state=JobState.FAILED,
                error=f"{error} (after {job.attempt} attempts)",
            )
            job_log(job_id=job_id, attempt=attempt, level="error", message=f"failed: {error}")
            return JobState.FAILED
        held.update(
            state=JobState.QUEUED,
            worker="",
            lease_expires_at=None,
            enqueued_at=now,
            message_sent_at=None,
            updated_at=now,
        )
        close_open_attempts(job_id=job_id, outcome="interrupted", error=error)
        job_log(
            job_id=job_id,
            attempt=attempt,
            level="warning",
            message=f"interrupted: {error}; re-queued",
        )
    return JobState.QUEUED


def job_attempt_note_error(*, job_id: int, attempt: int, error: str) -> None:
    """Record the error an attempt saw after it lost the job (the sweep closed it first)."""
    JobAttempt.objects.filter(job_id=job_id, number=attempt).update(
        error=f"{error} (recorded after the lease expired)"[:2000]
    )
