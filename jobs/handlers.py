"""Job kinds owned by the jobs app itself."""

from __future__ import annotations

import platform
import socket
import time
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from jobs.models import Job
from jobs.registry import JobContext, register

WORKER_CHECK_MAX_STEPS = 1000
WORKER_CHECK_MAX_PAUSE = 60.0


def worker_check_params(*, steps: int, pause_s: float) -> dict[str, Any]:
    """Validate a worker check's parameters (raises ValueError with the reason)."""
    if not 1 <= steps <= WORKER_CHECK_MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {WORKER_CHECK_MAX_STEPS}")
    if not 0 <= pause_s <= WORKER_CHECK_MAX_PAUSE:
        raise ValueError(f"pause must be between 0 and {WORKER_CHECK_MAX_PAUSE} seconds")
    return {"steps": steps, "pause_s": pause_s}


def _accelerator() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"cpu only (torch {torch.__version__})"


@register("worker_check", queue="cpu", label="Worker check")
def worker_check(job: Job, progress: JobContext) -> dict[str, Any]:
    """Prove a worker can reach the database and media storage, step by step.

    Engineers launch it on a queue to check a newly added worker end to end.
    """
    params = worker_check_params(**job.params)
    steps, pause = params["steps"], params["pause_s"]
    roundtrips_ms = []
    for step in range(steps):
        started = time.perf_counter()
        name = default_storage.save(
            f"worker-check/{job.pk}/{step}.txt", ContentFile(f"{job.pk}:{step}".encode())
        )
        try:
            with default_storage.open(name) as fh:
                if fh.read() != f"{job.pk}:{step}".encode():
                    raise RuntimeError(f"media storage returned different bytes for {name}")
        finally:
            default_storage.delete(name)
        Job.objects.filter(pk=job.pk).exists()
        roundtrips_ms.append((time.perf_counter() - started) * 1000)
        progress.update(step + 1, steps, f"step {step + 1} of {steps}")
        if pause:
            time.sleep(pause)
    progress.log(f"{steps} storage and database round-trips passed")
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "queue": job.queue,
        "storage": type(default_storage._wrapped).__name__,
        "mean_roundtrip_ms": round(sum(roundtrips_ms) / len(roundtrips_ms), 2),
        "accelerator": _accelerator(),
    }
