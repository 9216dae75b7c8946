"""Runs one claimed job: the bridge between Celery tasks and the engine's Progress object."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from fairskin.progress import JobCancelled, Progress
from jobs import lease, registry, services
from jobs.models import Job

logger = logging.getLogger(__name__)
T = TypeVar("T")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobProgress:
    """Implements fairskin.progress.Progress over the job table.

    Progress writes are throttled; each one also renews the lease and reports whether the
    job was cancelled, which raises JobCancelled inside the engine. ``phase`` names the part
    of the work now running, so the pages never show one phase's count during another.
    ``lease`` fences the handler's domain writes (``with progress.lease.hold(): ...``).
    """

    def __init__(
        self, job: Job, worker: str, min_interval: float = 0.5, echo: Progress | None = None
    ) -> None:
        self.job = job
        self.worker = worker
        self.lease = lease.JobLease(job_id=job.pk, worker=worker)
        self.min_interval = min_interval
        self.echo = echo  # a terminal progress bar when a command runs the job itself
        self._last_write = 0.0

    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        if self.echo is not None:
            self.echo.phase(name, total, done)
        self._last_write = time.monotonic()
        cancelled = lease.job_heartbeat(
            job_id=self.job.pk,
            worker=self.worker,
            done=done,
            total=total,
            message="",
            phase=name,
        )
        if cancelled:
            raise JobCancelled(f"job {self.job.pk} was cancelled")

    def update(self, done: int, total: int, message: str = "") -> None:
        if self.echo is not None:
            self.echo.update(done, total, message)
        now = time.monotonic()
        if done < total and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        cancelled = lease.job_heartbeat(
            job_id=self.job.pk, worker=self.worker, done=done, total=total, message=message
        )
        if cancelled:
            raise JobCancelled(f"job {self.job.pk} was cancelled")

    def log(self, message: str) -> None:
        if self.echo is not None:
            self.echo.log(message)
        lease.job_log(job_id=self.job.pk, attempt=self.job.attempt, message=message)

    def check_cancelled(self) -> None:
        if lease.job_heartbeat(job_id=self.job.pk, worker=self.worker):
            raise JobCancelled(f"job {self.job.pk} was cancelled")


class _LeaseKeeper(threading.Thread):
    """Renews the lease while the handler runs, so a long step without progress reports
    (loading a model, say) is not mistaken for a dead worker. Dies with the process."""

    def __init__(self, job_id: int, worker: str) -> None:
        super().__init__(daemon=True, name=f"lease-{job_id}")
        self.job_id = job_id
        self.worker = worker
        self.stop = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        interval = max(1.0, settings.FAIRSKIN_JOB_LEASE_SECONDS / 3)
        try:
            while not self.stop.wait(interval):
                try:
                    lease.job_heartbeat(job_id=self.job_id, worker=self.worker)
                except lease.LeaseLost:
                    self.lost.set()
                    return
                except Exception:
                    logger.exception("lease renewal for job %s failed; retrying", self.job_id)
                    close_old_connections()
        finally:
            connection.close()


def is_transient(exc: BaseException) -> bool:
    """An error that says nothing about the work: the database connection went away."""
    return isinstance(exc, (OperationalError, InterfaceError))


def _with_retries(write: Callable[[], T], *, what: str, job_id: int) -> T:
    """Run a bookkeeping write, waiting out a database outage (up to one lease)."""
    deadline = time.monotonic() + max(10.0, float(settings.FAIRSKIN_JOB_LEASE_SECONDS))
    pause = 0.5
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() >= deadline:
                raise
            logger.warning(
                "job %s: could not record %s yet; the database is away, retrying", job_id, what
            )
            close_old_connections()
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def execute_job(*, job_id: int, worker: str | None = None, echo: Progress | None = None) -> str:
    """Claim and run a job. Returns what happened: not-claimed, succeeded, failed, cancelled,
    interrupted (re-queued after a database outage) or lease-lost. Never raises for the
    handler's own errors; an attempt that lost its lease writes nothing more."""
    worker = worker or worker_identity()
    job = lease.job_claim(job_id=job_id, worker=worker)
    if job is None:
        logger.info("job %s not claimable (held elsewhere, finished or cancelled)", job_id)
        return "not-claimed"
    keeper = _LeaseKeeper(job.pk, worker)
    keeper.start()
    try:
        return _run_claimed(job, worker, echo)
    finally:
        keeper.stop.set()
        keeper.join(timeout=5)


def _run_claimed(job: Job, worker: str, echo: Progress | None) -> str:
    attempt = job.attempt
    try:
        progress = JobProgress(job, worker, echo=echo)
        handler = registry.get_kind(job.kind).handler
        result = handler(job, progress)
        _with_retries(
            lambda: lease.job_succeed(
                job_id=job.pk, worker=worker, result=result or {}, attempt=attempt
            ),
            what="success",
            job_id=job.pk,
        )
        return "succeeded"
    except JobCancelled:
        try:
            _with_retries(
                lambda: lease.job_mark_cancelled(job_id=job.pk, worker=worker, attempt=attempt),
                what="cancellation",
                job_id=job.pk,
            )
        except lease.LeaseLost:
            return "lease-lost"
        return "cancelled"
    except lease.LeaseLost:
        # Another attempt owns the job now (this one stalled past its lease, or the job was
        # finished elsewhere): end silently, writing nothing.
        logger.warning(
            "job %s attempt %s: lease lost; another attempt owns it now", job.pk, attempt
        )
        return "lease-lost"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc()
        try:
            return _record_failure(job, worker, attempt, exc, error=error, trace=trace)
        except lease.LeaseLost:
            _note_lost_error(job.pk, attempt, error)
            return "lease-lost"
        except (OperationalError, InterfaceError):
            logger.exception(
                "job %s: the database stayed away; the sweep will re-queue it "
                "and this attempt's error is only in this log: %s",
                job.pk,
                error,
            )
            return "lease-lost"


def _record_failure(
    job: Job, worker: str, attempt: int, exc: Exception, *, error: str, trace: str
) -> str:
    def write() -> str:
        # Only the holder may log and decide: a stalled attempt that lost the job says nothing.
        with lease.JobLease(job_id=job.pk, worker=worker).hold():
            lease.job_log(job_id=job.pk, attempt=attempt, level="error", message=trace)
        if is_transient(exc):
            state = lease.job_release(job_id=job.pk, worker=worker, error=error, attempt=attempt)
            if state != "queued":
                return "failed"
            services.job_enqueue(job=Job.objects.get(pk=job.pk))
            return "interrupted"
        lease.job_fail(job_id=job.pk, worker=worker, error=error, attempt=attempt)
        return "failed"

    return _with_retries(write, what="the failure", job_id=job.pk)


def _note_lost_error(job_id: int, attempt: int, error: str) -> None:
    try:
        _with_retries(
            lambda: lease.job_attempt_note_error(job_id=job_id, attempt=attempt, error=error),
            what="the error",
            job_id=job_id,
        )
    except (OperationalError, InterfaceError):
        logger.exception("job %s attempt %s: could not record its error %s", job_id, attempt, error)


class ForegroundStopped(Exception):
    """A job run by a command's --wait ended without succeeding."""

    def __init__(self, job: Job, outcome: str) -> None:
        super().__init__(f"{job.title or job.kind} {outcome}: {job.error}")
        self.job, self.outcome = job, outcome


def run_here(*, job_id: int, echo: Progress | None = None) -> str:
    """Run a job in this process until it ends (a command's --wait). An attempt interrupted
    by a database outage is run again at once, within the job's attempt budget."""
    while True:
        outcome = execute_job(job_id=job_id, echo=echo)
        if outcome != "interrupted":
            return outcome


def drain_here(*, root_id: int, active: Callable[[], bool], echo: Progress | None = None) -> None:
    """Run a job and the follow-up jobs it queues, oldest first, in this process while
    ``active()`` says the work they serve is not done. Raises ForegroundStopped when one of
    them ends without succeeding, or LookupError when nothing is left to run."""
    while active():
        job = (
            Job.objects.filter(pk=root_id, state="queued").first()
            or Job.objects.filter(parent_id=root_id, state="queued").order_by("id").first()
        )
        if job is None:
            raise LookupError("no queued job is left to run here")
        if echo is not None:
            echo.log(job.title)
        outcome = run_here(job_id=job.pk, echo=echo)
        if outcome not in ("succeeded", "not-claimed"):
            job.refresh_from_db()
            raise ForegroundStopped(job, outcome)
