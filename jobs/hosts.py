"""Workers say what they can hold when they start (issue 19): the queues they take and the
devices they show, so a launch can refuse a run that no worker could train."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.utils import timezone

from jobs.models import WorkerHost

logger = logging.getLogger(__name__)
MULTI_GPU_QUEUE = re.compile(r"^gpu-x(\d+)$")


def gpu_queue(processes: int) -> str:
    """The queue a GPU job on ``processes`` devices waits on."""
    return "gpu" if processes == 1 else f"gpu-x{processes}"


def worker_queues(devices: int) -> list[str]:
    """The queues a GPU worker on a machine showing ``devices`` takes: gpu, gpu-x2 .. gpu-xN."""
    return [gpu_queue(n) for n in range(1, min(devices, 8) + 1)]


def queue_processes(queue: str) -> int:
    """How many devices a job on ``queue`` needs: N for gpu-xN, else 1."""
    match = MULTI_GPU_QUEUE.match(queue)
    return int(match.group(1)) if match else 1


def count_devices() -> tuple[int, str]:
    """(devices, kind) of this machine as the training ranks see them.

    Counted in a short-lived subprocess: a Celery worker's main process forks its pool
    children, and CUDA initialised before a fork (which ``torch.cuda.is_available`` does)
    breaks CUDA in every child."""
    script = (
        "import json, torch; from fairskin.diffusion.parallel import visible_devices; "
        "print(json.dumps([visible_devices(), 'cuda' if torch.cuda.is_available() else 'cpu']))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not count this machine's devices: {done.stderr[-500:]}")
    devices, kind = json.loads(done.stdout.strip().splitlines()[-1])
    return int(devices), str(kind)


def register_worker(*, name: str, queues: list[str]) -> WorkerHost:
    """Record a starting worker. One that takes gpu-xN with fewer than N devices is logged as
    an error (its multi-process jobs would be refused by the ranks' launcher)."""
    devices, kind = 0, ""
    if any(q.startswith("gpu") for q in queues):
        devices, kind = count_devices()
    for queue in queues:
        if queue_processes(queue) > devices and queue.startswith("gpu-x"):
            logger.error(
                "worker %s takes %s but shows %d %s devices: its jobs there will be refused; "
                "start it with the queues `manage.py worker_queues` prints",
                name,
                queue,
                devices,
                kind,
            )
    host, _ = WorkerHost.objects.update_or_create(
        name=name,
        defaults={
            "queues": sorted(queues),
            "devices": devices,
            "device_kind": kind,
            "started_at": timezone.now(),
        },
    )
    return host


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """Celery's worker_ready signal: ``sender`` is the worker's consumer."""
    try:
        queues = list(sender.app.amqp.queues.consume_from)
        register_worker(name=sender.hostname, queues=queues)
    except Exception:  # never keep a worker from starting over its registration
        logger.exception("could not record this worker's queues and devices")
