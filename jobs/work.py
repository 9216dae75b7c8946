"""Worker-side services of the jobs app: the worker check (called by jobs.job_kinds)."""

from __future__ import annotations

import platform
import socket
import time
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from fairskin.progress import Progress
from jobs import artifacts
from jobs.models import Job

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


def _artifact_roundtrip(key: str, data: bytes) -> None:
    """Put, read back and delete one object in the artifact store (the bucket, or the local
    folder): a worker that cannot reach it fails the check with the store's reason."""
    store = artifacts.store()
    store.put_bytes(key, data)
    try:
        if store.get_bytes(key) != data:
            raise RuntimeError(f"the artifact store returned different bytes for {key}")
    finally:
        store.delete([key])


def worker_check_run(*, job: Job, progress: Progress, steps: int, pause_s: float) -> dict[str, Any]:
    """Round-trip a file through media storage and read the job table, ``steps`` times."""
    pause = pause_s
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
        _artifact_roundtrip(f"worker-check/{job.pk}/{step}.txt", f"{job.pk}:{step}".encode())
        Job.objects.filter(pk=job.pk).exists()
        roundtrips_ms.append((time.perf_counter() - started) * 1000)
        progress.update(step + 1, steps, f"step {step + 1} of {steps}")
        if pause:
            time.sleep(pause)
    progress.log(f"{steps} media, artifact store and database round-trips passed")
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "queue": job.queue,
        # LazyObject proxies __class__: this names the configured storage class.
        "storage": default_storage.__class__.__name__,
        "artifact_store": artifacts.store().describe(),
        "mean_roundtrip_ms": round(sum(roundtrips_ms) / len(roundtrips_ms), 2),
        "accelerator": _accelerator(),
    }
