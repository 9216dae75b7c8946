"""The app-facing job API: launch, send, cancel and resume. Workers use jobs.lease.

Messages go out through an outbox: the job row is the message. It is written in the same
transaction as the state change that calls for it and sent after commit; if the broker does
not take it, the row stays queued with no ``message_sent_at`` and the sweep relays it until the
broker is back. So a broker outage delays follow-up work but can never fail work that is done.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import registry
from jobs.broker import broker_check
from jobs.lease import InvalidTransition, check_transition, job_log
from jobs.models import Job, JobState

logger = logging.getLogger(__name__)


def job_create(
    *,
    kind: str,
    params: dict[str, Any] | None = None,
    title: str = "",
    launched_by: Any = None,
    queue: str | None = None,
    parent: Job | None = None,
    enqueue: bool = True,
    require_broker: bool = True,
) -> Job:
    """Create a queued job and send it to its queue once the transaction commits.

    A launch by a user refuses (creating nothing) when the kind is unknown or the broker
    cannot be reached, so a user never ends up with a job that silently never starts. Work
    that hands on to follow-up jobs passes ``require_broker=False``: the follow-up is written
    with the hand-over and relayed by the outbox whenever the broker is back. With
    ``enqueue=False`` the caller runs the job itself (a command's --wait); if that process
    dies, the sweep sends the job to a worker.
    """
    job_kind = registry.get_kind(kind)
    if parent is not None and Job.objects.filter(pk=parent.pk, runs_here=True).exists():
        enqueue = False  # the command running the parent runs its follow-ups too
    if enqueue and require_broker:
        broker_check()
    now = timezone.now()
    job = Job.objects.create(
        kind=kind,
        title=title or job_kind.label,
        queue=queue or job_kind.queue,
        params=params or {},
        launched_by=launched_by if getattr(launched_by, "pk", None) else None,
        parent=parent,
        enqueued_at=now,
        attempt_limit=settings.FAIRSKIN_JOB_MAX_ATTEMPTS,
        runs_here=not enqueue,
        # Nobody needs to be told about a job the command runs itself: it is not in the
        # outbox. If the command dies, the stale re-send hands it to a worker.
        message_sent_at=None if enqueue else now,
    )
    if enqueue:
        job_log(job_id=job.pk, message=f"queued on the {job.queue} queue")
        job_enqueue(job=job)
    else:
        job_log(job_id=job.pk, message="running in the foreground of the launching command")
    return job


def job_enqueue(*, job: Job) -> None:
    """Send the job's message after the surrounding transaction commits."""
    job_id, queue = job.pk, job.queue
    transaction.on_commit(lambda: job_send(job_id=job_id, queue=queue))


def job_send(*, job_id: int, queue: str) -> bool:
    """Hand the job's message to the broker. Never raises: a message the broker did not take
    stays in the outbox (``message_sent_at`` empty) for the sweep to relay."""
    try:
        # A short retry lets kombu re-establish a connection that died in an outage; a broker
        # still away costs about a second here, then the outbox takes over.
        message = current_app.send_task(
            "jobs.run",
            kwargs={"job_id": job_id},
            queue=queue,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        )
    except Exception as exc:  # the broker is unreachable: the job stays queued, unsent
        logger.warning(
            "job %s: the broker did not take its message (%s); the sweep will send it again",
            job_id,
            exc,
        )
        return False
    now = timezone.now()
    Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        celery_task_id=message.id, message_sent_at=now, updated_at=now
    )
    return True


def job_cancel(*, job: Job, by: Any = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next progress report."""
    who = getattr(by, "username", "system")
    if job.state == JobState.QUEUED:
        check_transition(JobState.QUEUED, JobState.CANCELLED)
        if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
            state=JobState.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        ):
            job_log(job_id=job.pk, message=f"cancelled by {who} before it started")
            job.refresh_from_db()
            return job
        job.refresh_from_db()  # a worker claimed it meanwhile: fall through to running
    if job.state == JobState.RUNNING:
        Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True)
        job_log(job_id=job.pk, message=f"cancellation requested by {who}")
        job.refresh_from_db()
        return job
    raise InvalidTransition(f"a {job.state} job cannot be cancelled")


def job_resume(*, job: Job, by: Any = None) -> Job:
    """Queue a new attempt of a failed or cancelled job (job kinds resume from checkpoints).

    A user's resume grants a fresh budget of attempts, so a job the sweep gave up on, or one
    cancelled and resumed many times, really runs again.
    """
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise InvalidTransition(f"only failed or cancelled jobs can be resumed, not {job.state}")
    broker_check()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, state=job.state).update(
            state=JobState.QUEUED,
            cancel_requested=False,
            error="",
            finished_at=None,
            enqueued_at=timezone.now(),
            message_sent_at=None,
            attempt_limit=F("attempt") + settings.FAIRSKIN_JOB_MAX_ATTEMPTS,
            runs_here=False,  # a user's resume hands the job (and its follow-ups) to workers
            progress_phase="",
            phase_started_at=None,
        )
        if updated != 1:
            raise InvalidTransition("the job changed state meanwhile; reload and try again")
        _leave_the_command(job=job)
        job_log(job_id=job.pk, message=f"resumed by {getattr(by, 'username', 'system')}")
        job.refresh_from_db()
        job_enqueue(job=job)
    return job


def _leave_the_command(*, job: Job) -> None:
    """A user resumed part of a tree a command was running (the command died): the whole
    tree goes to the workers, and its queued jobs to the outbox, so later follow-ups are
    sent too."""
    root = job.parent_id or job.pk
    tree = Job.objects.filter(Q(pk=root) | Q(parent_id=root), runs_here=True)
    tree.filter(state=JobState.QUEUED).exclude(pk=job.pk).update(message_sent_at=None)
    tree.update(runs_here=False)


def job_user_cancel(*, job: Job, by: Any = None) -> str:
    """Cancel as a user asked on the jobs page or admin: through the job's owner when it has
    one (a shard cancels its batch), so the owner never waits on a job nobody runs."""
    owner = registry.job_owner(job)
    if owner is None:
        job_cancel(job=job, by=by)
        return f"Cancellation of job {job.pk} requested."
    owner.cancel(by)
    return f"Job {job.pk} belongs to {owner.label}: {owner.label} was cancelled."


def job_user_resume(*, job: Job, by: Any = None) -> str:
    owner = registry.job_owner(job)
    if owner is None:
        job = job_resume(job=job, by=by)
        return (
            f"Job {job.pk} queued for attempt {job.attempt + 1} "
            f"({job.attempts_left} attempts granted)."
        )
    owner.resume(by)
    return f"Job {job.pk} belongs to {owner.label}: {owner.label} was resumed."
