"""One job record for every long task: imports, training runs, generation shards, metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# Every state change goes through jobs.services, which checks it against this table.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # running -> queued is the sweep handing a dead worker's job back to the queue.
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    # Resuming a failed or cancelled job queues a new attempt.
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}


def default_attempt_limit() -> int:
    return settings.FAIRSKIN_JOB_MAX_ATTEMPTS


class Queue(models.TextChoices):
    GPU = "gpu", "GPU"
    CPU = "cpu", "CPU"
    # A training run on N data-parallel processes (issue 19) waits on gpu-xN, which only a
    # worker showing at least N devices takes (README: multi-GPU workers).
    GPU_X2 = "gpu-x2", "GPU x2"
    GPU_X3 = "gpu-x3", "GPU x3"
    GPU_X4 = "gpu-x4", "GPU x4"
    GPU_X5 = "gpu-x5", "GPU x5"
    GPU_X6 = "gpu-x6", "GPU x6"
    GPU_X7 = "gpu-x7", "GPU x7"
    GPU_X8 = "gpu-x8", "GPU x8"


class Job(models.Model):
    kind = models.CharField(max_length=64, help_text="Registered handler name.")
    title = models.CharField(max_length=200, blank=True)
    queue = models.CharField(max_length=8, choices=Queue.choices, default=Queue.CPU)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    attempt = models.PositiveIntegerField(default=0, help_text="Number of attempts started.")
    attempt_limit = models.PositiveIntegerField(
        default=default_attempt_limit,
        help_text="Attempts this job may start in all; a user's Resume grants a fresh budget.",
    )
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    worker = models.CharField(max_length=200, blank=True, help_text="Holder of the lease.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_message = models.CharField(max_length=300, blank=True)

    progress_phase = models.CharField(max_length=120, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    phase_start_done = models.PositiveIntegerField(
        default=0, help_text="Units already done when this phase started (a resumed run)."
    )

    celery_task_id = models.CharField(max_length=64, blank=True)
    # The outbox: a queued job whose message the broker has not accepted yet has no
    # message_sent_at; the sweep relays it until the broker takes it.
    message_sent_at = models.DateTimeField(null=True, blank=True)
    runs_here = models.BooleanField(
        default=False,
        help_text="Run by the launching command (--wait); the follow-up jobs it queues are too.",
    )
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("launch_job", "Can launch jobs"),
            ("control_job", "Can cancel and resume jobs"),
        ]
        indexes = [
            # The sweep's two queries: running jobs by lease, queued jobs by enqueue time.
            models.Index(
                fields=["lease_expires_at"],
                name="job_running_lease_idx",
                condition=Q(state="running"),
            ),
            models.Index(
                fields=["enqueued_at"], name="job_queued_idx", condition=Q(state="queued")
            ),
            models.Index(
                fields=["created_at"],
                name="job_unsent_idx",
                condition=Q(state="queued", message_sent_at__isnull=True),
            ),
            models.Index(fields=["kind", "-created_at"], name="job_kind_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} {self.kind} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def attempts_left(self) -> int:
        return max(0, self.attempt_limit - self.attempt)

    @property
    def eta_seconds(self) -> float | None:
        """Time left in the current phase at its rate so far; only while running."""
        if self.state != JobState.RUNNING or self.phase_started_at is None:
            return None
        done_here = self.progress_done - self.phase_start_done
        if not self.progress_total or done_here <= 0 or self.progress_done >= self.progress_total:
            return None
        from django.utils import timezone

        elapsed = (timezone.now() - self.phase_started_at).total_seconds()
        return elapsed / done_here * (self.progress_total - self.progress_done)

    @property
    def eta_display(self) -> str:
        seconds = self.eta_seconds
        if seconds is None:
            return ""
        minutes, secs = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 100 if self.state == JobState.SUCCEEDED else 0
        return min(100, round(100 * self.progress_done / self.progress_total))


class JobAttempt(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, blank=True, help_text="Empty while running.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="job_attempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"Job {self.job_id} attempt {self.number}"


class JobLogEntry(models.Model):
    """Append-only: rows are created, never updated or deleted by the app."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_entries")
    attempt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["job", "id"]
        verbose_name_plural = "job log entries"

    def __str__(self) -> str:
        return f"Job {self.job_id} log {self.pk}"


class WorkerHost(models.Model):
    """A Celery worker as it last started: the queues it takes and the devices it shows.

    Written by the worker itself (`jobs.hosts`), read at launch: a run on N processes is
    refused unless some worker took gpu-xN showing at least N devices."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery's worker name.")
    queues = models.JSONField(default=list)
    devices = models.PositiveIntegerField(default=0, help_text="CUDA devices, else CPU cores.")
    device_kind = models.CharField(max_length=8, blank=True)  # cuda or cpu; empty: no GPU queue
    started_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.devices} {self.device_kind or 'devices'})"
