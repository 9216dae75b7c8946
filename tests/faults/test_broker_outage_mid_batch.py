"""Fault: Redis (the broker) goes down while a batch's reference is being prepared, and stays
down past the end of that work.

Before the outbox, the preparing job failed after its work was done (queueing the first shards
needed the broker), the batch stayed "generating" with no shard, and neither Resume helped.
Now the shards are written with the hand-over and wait in the outbox; the preparing job
succeeds; when Redis is back the sweep relays them and the batch runs to its report with no
one touching it.
"""

from __future__ import annotations

import time

import pytest

from generation.models import Batch, BatchState
from generation.services import batch_create
from jobs.models import Job, JobState
from tests.conftest import wait_for
from tests.generation.conftest import demo, lora_run, tiny_artifacts  # noqa: F401
from tests.generation.test_batch_worker import assert_no_duplicates_or_gaps

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {"FAIRSKIN_JOB_LEASE_SECONDS": "5", "FAIRSKIN_SWEEP_SECONDS": "1"}
OUTAGE_S = 25


def test_a_broker_outage_during_preparation_delays_the_batch_and_strands_nothing(
    start_worker,
    app_on_private_broker,
    lora_run,  # noqa: F811
):
    broker = app_on_private_broker
    worker = start_worker(queues="gpu,cpu", WITH_BEAT="1", **FAST)
    batch = batch_create(
        model_run=lora_run,
        target=4,
        diagnoses=["MEL"],
        fst_distribution={5: 0.5, 6: 0.5},
        steps=2,
        shard_size=2,
        device_batch=2,
    )

    def prepare() -> Job:
        return Job.objects.get(pk=batch.job_id)

    wait_for(
        lambda: prepare().state == JobState.RUNNING,
        timeout=120,
        what="the preparation to start",
        workers=[worker],
    )
    broker.stop()
    down_at = time.monotonic()
    done = wait_for(
        lambda: prepare().is_terminal and prepare(),
        timeout=240,
        what="the preparation to end with the broker down",
        workers=[worker],
    )
    # The work was done, so the job succeeded; its follow-ups wait in the outbox.
    assert done.state == JobState.SUCCEEDED, done.error
    assert Batch.objects.get(pk=batch.pk).state == BatchState.GENERATING
    shards = Job.objects.filter(parent=done, kind="generation.shard")
    assert shards.count() >= 1
    assert set(shards.values_list("state", flat=True)) == {JobState.QUEUED}
    assert not shards.filter(message_sent_at__isnull=False).exists()

    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    broker.start()
    back_at = time.monotonic()
    outage = back_at - down_at
    first_claim = wait_for(
        lambda: Job.objects.filter(parent=done, kind="generation.shard", attempt__gte=1).exists(),
        timeout=120,
        what="a shard to be claimed after the broker came back",
        workers=[worker],
    )
    assert first_claim
    claimed_after = time.monotonic() - back_at
    finished = wait_for(
        lambda: not Batch.objects.get(pk=batch.pk).is_active and Batch.objects.get(pk=batch.pk),
        timeout=300,
        what="the batch to finish",
        workers=[worker],
    )
    assert finished.state == BatchState.FINISHED, finished.error
    assert finished.report["accepted"] == 4
    assert_no_duplicates_or_gaps(finished)
    assert not Job.objects.filter(parent=done, state=JobState.FAILED).exists()
    print(
        f"\nbroker down {outage:.1f}s; first shard claimed {claimed_after:.1f}s after it "
        f"came back; batch finished {time.monotonic() - back_at:.1f}s after it came back"
    )
