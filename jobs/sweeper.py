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
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

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
        from jobs.services import job_sweep

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
