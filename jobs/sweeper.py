"""The lease sweep, run on a timer in its own thread of the Celery beat process.

It is not a task in a queue: a sweep message waits behind whatever is queued ahead of it
(90 s of CPU jobs delayed a dead GPU worker's recovery to 92 s), and a busy single worker
never gets to it. Beat runs exactly once in every deployment shape (``celery beat`` in
compose, ``worker --beat`` under ``make run``), so the sweep starts with it: recovery takes at
most a lease plus one sweep interval, whatever the queues hold, and it keeps relaying the
outbox while the broker is down.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs.lease import close_open_attempts, job_log, owner_failed
from jobs.models import Job, JobState
from jobs.services import job_enqueue, job_send

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: SweepThread | None = None


class SweepThread(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="fairskin-job-sweep")
        self.interval = interval
        self.stop = threading.Event()
        self.sweeps = 0

    def run(self) -> None:
        logger.info("job sweep: every %.1f s in this process", self.interval)
        while not self.stop.wait(self.interval):
            try:
                close_old_connections()
                counts = job_sweep()
                self.sweeps += 1
                if any(counts.values()):
                    logger.info("job sweep: %s", counts)
            except Exception:  # a database outage: try again next time
                logger.exception("job sweep failed; retrying in %.1f s", self.interval)
                connection.close()
        connection.close()


def start_sweeper(**_: Any) -> SweepThread:
    """Start the sweep thread once per process (connected to Celery's beat_init)."""
    global _thread
    with _started:
        if _thread is None or not _thread.is_alive():
            _thread = SweepThread(float(settings.FAIRSKIN_SWEEP_SECONDS))
            _thread.start()
        return _thread


def job_sweep() -> dict[str, int]:
    """Recover jobs whose worker died, and relay messages the broker never took or lost.

    Runs in its own thread of the beat process (SweepThread), never behind ordinary work in
    a queue, so recovery time does not depend on queue depth. Safe to run concurrently: every
    change is a conditional update.
    """
    now = timezone.now()
    counts = {"requeued": 0, "gave_up": 0, "cancelled": 0, "resent": 0, "relayed": 0}
    expired = Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now)
    for job in expired.only("pk", "attempt", "attempt_limit", "cancel_requested", "queue", "kind"):
        # Each update repeats the expiry condition: a worker that renewed meanwhile keeps it.
        still_expired = Job.objects.filter(
            pk=job.pk, state=JobState.RUNNING, lease_expires_at__lt=now
        )
        with transaction.atomic():
            if job.cancel_requested:
                if still_expired.update(state=JobState.CANCELLED, finished_at=now, worker=""):
                    close_open_attempts(job_id=job.pk, outcome="cancelled")
                    job_log(job_id=job.pk, message="cancelled (its worker had stopped)")
                    counts["cancelled"] += 1
            elif job.attempt >= job.attempt_limit:
                error = f"gave up after {job.attempt} attempts whose workers stopped responding"
                if still_expired.update(
                    state=JobState.FAILED, finished_at=now, worker="", error=error
                ):
                    close_open_attempts(job_id=job.pk, outcome="lost", error="lease expired")
                    job_log(job_id=job.pk, level="error", message=error)
                    owner_failed(job=job, error=error)
                    counts["gave_up"] += 1
            elif still_expired.update(
                state=JobState.QUEUED, worker="", enqueued_at=now, message_sent_at=None
            ):
                close_open_attempts(job_id=job.pk, outcome="lost", error="lease expired")
                job_log(job_id=job.pk, level="warning", message="lease expired; re-queued")
                job_enqueue(job=job)
                counts["requeued"] += 1
    # The outbox: messages the broker did not take when they were written.
    # Jobs queued in the last second are left to the send after their own commit.
    unsent = Job.objects.filter(
        state=JobState.QUEUED, message_sent_at__isnull=True, cancel_requested=False
    ).filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - timedelta(seconds=1)))
    for job in unsent.only("pk", "queue").order_by("created_at")[:1000]:
        if job_send(job_id=job.pk, queue=job.queue):
            counts["relayed"] += 1
        else:
            break  # the broker is still away; the next sweep tries again
    # Messages the broker took and then lost (a Redis restart without persistence).
    stale_before = now - timedelta(seconds=settings.FAIRSKIN_JOB_REQUEUE_STALE_SECONDS)
    stale = Job.objects.filter(
        state=JobState.QUEUED, cancel_requested=False, message_sent_at__lt=stale_before
    )
    for job in stale.only("pk", "queue")[:1000]:
        if job_send(job_id=job.pk, queue=job.queue):
            counts["resent"] += 1
        else:
            break
    return counts
