"""Runs one claimed job: the bridge between Celery tasks and the engine's Progress object."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid

from django.conf import settings
from django.db import close_old_connections, connection

from fairskin.progress import JobCancelled, Progress
from jobs import registry, services
from jobs.models import Job

logger = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobProgress:
    """Implements fairskin.progress.Progress over the job table.

    Progress writes are throttled; each one also renews the lease and reports whether the
    job was cancelled, which raises JobCancelled inside the engine.
    """

    def __init__(
        self, job: Job, worker: str, min_interval: float = 0.5, echo: Progress | None = None
    ) -> None:
        self.job = job
        self.worker = worker
        self.min_interval = min_interval
        self.echo = echo  # a terminal progress bar when a command runs the job itself
        self._last_write = 0.0

    def update(self, done: int, total: int, message: str = "") -> None:
        if self.echo is not None:
            self.echo.update(done, total, message)
        now = time.monotonic()
        if done < total and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        cancelled = services.job_heartbeat(
            job_id=self.job.pk, worker=self.worker, done=done, total=total, message=message
        )
        if cancelled:
            raise JobCancelled(f"job {self.job.pk} was cancelled")

    def log(self, message: str) -> None:
        if self.echo is not None:
            self.echo.log(message)
        services.job_log(job_id=self.job.pk, attempt=self.job.attempt, message=message)

    def check_cancelled(self) -> None:
        if services.job_heartbeat(job_id=self.job.pk, worker=self.worker):
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
                    services.job_heartbeat(job_id=self.job_id, worker=self.worker)
                except services.LeaseLost:
                    self.lost.set()
                    return
                except Exception:
                    logger.exception("lease renewal for job %s failed; retrying", self.job_id)
                    close_old_connections()
        finally:
            connection.close()


def execute_job(*, job_id: int, worker: str | None = None, echo: Progress | None = None) -> str:
    """Claim and run a job. Returns what happened: claimed-elsewhere, succeeded, failed,
    cancelled or lease-lost. Never raises for the handler's own errors."""
    worker = worker or worker_identity()
    job = services.job_claim(job_id=job_id, worker=worker)
    if job is None:
        logger.info("job %s not claimable (held elsewhere, finished or cancelled)", job_id)
        return "not-claimed"
    keeper = _LeaseKeeper(job.pk, worker)
    keeper.start()
    try:
        progress = JobProgress(job, worker, echo=echo)
        handler = registry.get_kind(job.kind).handler
        result = handler(job, progress)
        services.job_succeed(
            job_id=job.pk, worker=worker, result=result or {}, attempt=job.attempt
        )
        return "succeeded"
    except JobCancelled:
        services.job_mark_cancelled(job_id=job.pk, worker=worker, attempt=job.attempt)
        return "cancelled"
    except services.LeaseLost:
        logger.warning("job %s: lease lost; another attempt owns it now", job.pk)
        return "lease-lost"
    except Exception as exc:
        services.job_log(
            job_id=job.pk, attempt=job.attempt, level="error", message=traceback.format_exc()
        )
        try:
            services.job_fail(
                job_id=job.pk, worker=worker, error=f"{type(exc).__name__}: {exc}",
                attempt=job.attempt,
            )
        except services.LeaseLost:
            return "lease-lost"
        return "failed"
    finally:
        keeper.stop.set()
        keeper.join(timeout=5)
