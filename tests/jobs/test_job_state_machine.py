"""Every interleaving of the job protocol ends finished or resumable.

A hypothesis state machine drives the real services on PostgreSQL for a generation batch
(preparation, shards, report) and a review study: two workers claim, renew, stall (their lease
is expired by moving its timestamp), wake and carry on, do the domain work under their lease,
fail, notice cancellation; the sweep runs; users cancel and resume through the owners, as the
jobs page does. The domain work is the handlers' own services (batch_start, batch_advance,
study_prepare, batch_finish), with candidates stored as rows instead of generated pixels.

After every step the invariants are database queries:
- no job has two open attempts, and a running job's open attempt is its holder's;
- no job waits in the queue with no attempt left (it would be queued for ever);
- no study or batch failed while its job succeeded, and none is working with no job working
  for it and nothing to resume;
- no candidate or study item is stored twice, and shard ranges never overlap.

Budget: 25 examples of up to 40 steps, about 13 s on the 2-core CI machine (every session's
CI run hunts anew; ``FAIRSKIN_STATE_MACHINE_EXAMPLES`` raises it for a longer hunt).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from fairskin.progress import JobCancelled, SilentProgress
from generation.advance import batch_advance, batch_finish, batch_start
from generation.models import Batch, BatchState, Sample
from jobs import lease, services, sweeper
from jobs.models import TERMINAL_STATES, Job, JobAttempt, JobState
from review.models import Study, StudyItem, StudyState
from review.services.study import study_create, study_prepare
from tests.factories import BatchFactory, SampleFactory
from tests.review.conftest import batch, raters  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db
EXAMPLES = int(os.environ.get("FAIRSKIN_STATE_MACHINE_EXAMPLES", "25"))
WORKERS = ("w1", "w2")


def _work(job: Job, held: lease.JobLease) -> None:
    """What the job's handler does, through the same services and fences."""
    if job.kind == "review.prepare":
        study = Study.objects.get(job=job)
        if study.state == StudyState.FAILED:
            raise JobCancelled("stopped")
        if study.state == StudyState.PREPARING:
            study_prepare(study=study, progress=SilentProgress(), lease=held)
        return
    owned = Batch.objects.get(pk=job.params["batch_id"])
    if owned.state in (BatchState.CANCELLED, BatchState.FAILED):
        raise JobCancelled("stopped")
    if job.kind == "generation.prepare" and owned.state == BatchState.PREPARING:
        batch_start(batch_id=owned.pk, provenance={}, lease=held)
    elif job.kind == "generation.shard" and owned.state == BatchState.GENERATING:
        for dx, fst, start, stop in job.params["ranges"]:
            for index in range(start, stop):
                with held.hold():
                    if not Sample.objects.filter(
                        batch=owned, diagnosis=dx, fst=fst, index=index
                    ).exists():
                        SampleFactory(
                            batch=owned,
                            diagnosis=dx,
                            fst=fst,
                            index=index,
                            failed_checks=["lpips"] if index % 3 == 2 else [],
                            shard_job=job,
                        )
        batch_advance(batch_id=owned.pk, current_job=job.pk, lease=held)
    elif job.kind == "generation.report" and owned.state == BatchState.REPORTING:
        batch_finish(batch_id=owned.pk, report={"accepted": 0}, lease=held)


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self, batch_for_study: Batch, study_raters: list) -> None:
        super().__init__()
        self.savepoint = transaction.savepoint()
        self.batch = BatchFactory(
            state=BatchState.PREPARING,
            job__runs_here=True,
            quotas={"MEL:5": 2, "MEL:6": 2},
            job__state=JobState.QUEUED,
            job__params={},
        )
        Job.objects.filter(pk=self.batch.job_id).update(params={"batch_id": self.batch.pk})
        self.study = study_create(
            batch=batch_for_study, raters=study_raters, sample_size=4, seed=1, enqueue=False
        )
        # Jobs each worker has claimed, held or since lost: a stalled worker that wakes acts
        # on what it believes it still holds.
        self.claimed: dict[str, list[int]] = {w: [] for w in WORKERS}

    def teardown(self) -> None:
        transaction.savepoint_rollback(self.savepoint)

    def jobs(self) -> list[Job]:
        ids = [self.batch.job_id, self.study.job_id]
        return list(
            Job.objects.filter(pk__in=ids) | Job.objects.filter(parent_id=ids[0]).order_by("id")
        )

    def pick(self, n: int) -> Job:
        jobs = self.jobs()
        return jobs[n % len(jobs)]

    def believed(self, worker: str, n: int) -> Job:
        """A job this worker claimed at some point (held, or lost while it stalled)."""
        mine = self.claimed[worker]
        return Job.objects.get(pk=mine[n % len(mine)]) if mine else self.pick(n)

    # --- workers ---------------------------------------------------------------------------

    @rule(n=st.integers(0, 20), worker=st.sampled_from(WORKERS))
    def claim(self, n, worker):
        job = lease.job_claim(job_id=self.pick(n).pk, worker=worker)
        if job is not None:
            self.claimed[worker].append(job.pk)

    @rule(n=st.integers(0, 20), worker=st.sampled_from(WORKERS))
    def heartbeat(self, n, worker):
        job = self.believed(worker, n)
        try:
            if lease.job_heartbeat(job_id=job.pk, worker=worker):
                lease.job_mark_cancelled(job_id=job.pk, worker=worker)
        except lease.LeaseLost:
            pass

    @rule(n=st.integers(0, 20), worker=st.sampled_from(WORKERS), succeed=st.booleans())
    def work(self, n, worker, succeed):
        """Do the work as this worker; with succeed=False the worker dies right after it."""
        job = self.believed(worker, n)
        held = lease.JobLease(job_id=job.pk, worker=worker)
        try:
            _work(job, held)
            if succeed:
                lease.job_succeed(job_id=job.pk, worker=worker)
        except JobCancelled:
            try:
                lease.job_mark_cancelled(job_id=job.pk, worker=worker)
            except lease.LeaseLost:
                pass
        except lease.LeaseLost:
            pass  # a stalled worker that woke: it writes nothing

    @rule(n=st.integers(0, 20), worker=st.sampled_from(WORKERS))
    def fail(self, n, worker):
        try:
            lease.job_fail(job_id=self.believed(worker, n).pk, worker=worker, error="boom")
        except lease.LeaseLost:
            pass

    @rule(n=st.integers(0, 20))
    def stall_past_the_lease(self, n):
        Job.objects.filter(pk=self.pick(n).pk, state=JobState.RUNNING).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )

    @rule()
    def sweep(self):
        sweeper.job_sweep()

    # --- users -------------------------------------------------------------------------------

    @rule(n=st.integers(0, 20))
    def user_cancels(self, n):
        try:
            services.job_user_cancel(job=self.pick(n))
        except (lease.InvalidTransition, ValueError):
            pass

    @rule(n=st.integers(0, 20))
    def user_resumes(self, n):
        try:
            services.job_user_resume(job=self.pick(n))
        except (lease.InvalidTransition, ValueError):
            pass

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def one_holder_at_most(self):
        open_attempts = JobAttempt.objects.filter(outcome="").values("job").annotate(n=Count("id"))
        assert all(row["n"] == 1 for row in open_attempts), list(open_attempts)
        for job in Job.objects.filter(state=JobState.RUNNING):
            holders = list(job.attempts.filter(outcome="").values_list("worker", flat=True))
            assert holders == [job.worker], (job, holders)

    @invariant()
    def nothing_queued_for_ever(self):
        stuck = Job.objects.filter(state=JobState.QUEUED, attempt__gte=models_f("attempt_limit"))
        assert not stuck.exists(), list(stuck.values("id", "kind", "attempt", "attempt_limit"))

    @invariant()
    def owners_follow_their_jobs(self):
        study = Study.objects.select_related("job").get(pk=self.study.pk)
        owned = Batch.objects.select_related("job").get(pk=self.batch.pk)
        if study.state == StudyState.FAILED:
            assert study.job.state != JobState.SUCCEEDED, "study failed, its job succeeded"
        if study.state == StudyState.PREPARING:
            assert study.job.state in (JobState.QUEUED, JobState.RUNNING), study.job.state
        if owned.state == BatchState.FAILED:
            assert owned.job.state != JobState.SUCCEEDED, "batch failed, its job succeeded"
        if owned.state == BatchState.PREPARING:
            assert owned.job.state in (JobState.QUEUED, JobState.RUNNING), owned.job.state
        if owned.state in (BatchState.GENERATING, BatchState.REPORTING):
            children = Job.objects.filter(parent=owned.job)
            working = children.exclude(state__in=TERMINAL_STATES).exists()
            resumable = children.filter(state=JobState.FAILED).exists()
            assert working or resumable, (
                f"batch {owned.state} with no job working and nothing to resume: "
                f"{list(children.values_list('kind', 'state'))}"
            )

    @invariant()
    def no_work_twice(self):
        rows = Sample.objects.filter(batch=self.batch).values("diagnosis", "fst", "index")
        keys = [tuple(r.values()) for r in rows]
        assert len(keys) == len(set(keys))
        seen: set[tuple[str, int, int]] = set()
        for job in Job.objects.filter(parent=self.batch.job, kind="generation.shard"):
            for dx, fst, start, stop in job.params["ranges"]:
                for index in range(start, stop):
                    assert (dx, fst, index) not in seen, "two shards planned one candidate"
                    seen.add((dx, fst, index))
        items = StudyItem.objects.filter(study=self.study).values_list("image_id", flat=True)
        assert len(items) == len(set(items))


def models_f(name: str):
    from django.db.models import F

    return F(name)


def test_no_interleaving_strands_work_or_runs_it_twice(batch, raters):  # noqa: F811
    run_state_machine_as_test(
        lambda: JobLifecycle(batch, raters),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
