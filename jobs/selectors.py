"""Reads on jobs."""

from __future__ import annotations

from django.db.models import QuerySet

from jobs.models import Job, WorkerHost


def job_list_recent(*, limit: int = 50, state: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.select_related("launched_by")
    if state:
        jobs = jobs.filter(state=state)
    return jobs.order_by("-created_at")[:limit]


def job_get(*, job_id: int) -> Job:
    return Job.objects.select_related("launched_by", "parent").get(pk=job_id)


def job_log_tail(*, job: Job, limit: int = 200) -> list:
    entries = list(job.log_entries.order_by("-id")[:limit])
    entries.reverse()
    return entries


def worker_hosts_for(*, queue: str, devices: int) -> list[WorkerHost]:
    """Workers that took ``queue`` when they last started and showed at least ``devices``."""
    return [
        host
        for host in WorkerHost.objects.order_by("-devices", "name")
        if queue in host.queues and host.devices >= devices
    ]


def worker_most_devices() -> WorkerHost | None:
    """The worker that showed the most devices (for a refusal's message)."""
    return WorkerHost.objects.exclude(device_kind="").order_by("-devices", "name").first()
