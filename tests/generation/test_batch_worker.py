"""Generation batches on real Celery workers (Redis, PostgreSQL): a batch runs to its report,
and a worker SIGKILLed mid-batch leaves, after a restart, no duplicates and no gaps."""

import pytest

from catalog.models import Image
from generation.models import Batch, BatchState, Sample, Verdict
from generation.services import batch_create
from jobs.models import Job, JobState
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST_LEASE = {"FAIRSKIN_JOB_LEASE_SECONDS": "3", "FAIRSKIN_SWEEP_SECONDS": "1"}


def batch_of(pk: int) -> Batch:
    return Batch.objects.get(pk=pk)


def assert_no_duplicates_or_gaps(batch: Batch) -> None:
    samples = list(Sample.objects.filter(batch=batch).values_list("diagnosis", "fst", "index"))
    assert len(samples) == len(set(samples))
    assert Image.objects.filter(dataset=batch.dataset).count() == len(samples)
    for key, quota in batch.quotas.items():
        dx, fst = key.split(":")
        indices = sorted(i for d, f, i in samples if (d, f) == (dx, int(fst)))
        accepted = Sample.objects.filter(
            batch=batch, diagnosis=dx, fst=int(fst), verdict=Verdict.ACCEPTED
        ).count()
        assert accepted == quota
        # Every seed up to the last accepted one was generated and decided.
        last = max(
            Sample.objects.filter(
                batch=batch, diagnosis=dx, fst=int(fst), verdict=Verdict.ACCEPTED
            ).values_list("index", flat=True)
        )
        assert indices[: last + 1] == list(range(last + 1))
    assert not Sample.objects.filter(batch=batch, verdict=Verdict.PENDING).exists()


def test_a_batch_runs_on_a_gpu_and_a_cpu_worker_to_its_report(start_worker, lora_run):
    worker = start_worker(queues="gpu,cpu")
    batch = batch_create(
        model_run=lora_run,
        target=6,
        diagnoses=["MEL", "NV"],
        fst_distribution={5: 0.5, 6: 0.5},
        steps=2,
        shard_size=2,
        device_batch=2,
    )
    done = wait_for(
        lambda: not batch_of(batch.pk).is_active and batch_of(batch.pk),
        timeout=300,
        what="the batch",
        workers=[worker],
    )
    assert done.state == BatchState.FINISHED, done.error
    assert done.report["accepted"] == 6
    shards = Job.objects.filter(parent=done.job, kind="generation.shard")
    assert shards.count() >= 3 and set(shards.values_list("state", flat=True)) <= {
        JobState.SUCCEEDED,
        JobState.CANCELLED,
    }
    assert_no_duplicates_or_gaps(done)


def test_a_worker_killed_mid_batch_leaves_no_duplicates_or_gaps(start_worker, lora_run):
    first = start_worker(queues="gpu,cpu", **FAST_LEASE)
    batch = batch_create(
        model_run=lora_run,
        target=8,
        diagnoses=["MEL"],
        fst_distribution={5: 0.5, 6: 0.5},
        steps=4,
        shard_size=4,
        device_batch=1,
    )
    # Shards hold 4 candidates each (one stratum's quota) and store them one by one: kill the
    # worker in the middle of a shard.
    wait_for(
        lambda: Sample.objects.filter(batch=batch).count() % 4 in (1, 2, 3),
        timeout=300,
        what="a shard half stored",
        workers=[first],
    )
    first.kill()
    stored_before = Sample.objects.filter(batch=batch).count()
    assert batch_of(batch.pk).is_active
    second = start_worker(queues="gpu,cpu", WITH_BEAT="1", **FAST_LEASE)
    done = wait_for(
        lambda: not batch_of(batch.pk).is_active and batch_of(batch.pk),
        timeout=300,
        what="the batch after the restart",
        workers=[second],
    )
    assert done.state == BatchState.FINISHED, done.error
    assert_no_duplicates_or_gaps(done)
    # The killed shard was re-claimed by a second attempt that skipped what was stored.
    retried = Job.objects.filter(parent=done.job, kind="generation.shard", attempt__gte=2)
    assert retried.exists() and Sample.objects.filter(batch=done).count() >= stored_before
    if stored_before % 4:  # the worker died mid-shard (it can finish one more image first)
        skipped = [
            e.message
            for job in retried
            for e in job.log_entries.all()
            if "already stored" in e.message
        ]
        assert any(not m.startswith("4 candidates, 0 ") for m in skipped), skipped
