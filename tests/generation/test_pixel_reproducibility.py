"""A candidate's pixels (its PNG's sha256) do not depend on shard size, shard boundaries or a
resumed shard; they do depend on the batch's micro-batch size (--device-batch), which the batch
records with the machine it ran on. Real batches run here in the foreground on the tiny model,
their jobs executed one by one as `generate --wait` does."""

import pytest
import torch

from fairskin.generation.groups import pixel_environment
from generation.models import Batch, BatchState, Sample
from generation.services import batch_create
from jobs.models import Job, JobState
from jobs.runner import execute_job
from jobs.services import job_create

pytestmark = pytest.mark.django_db


def create(lora_run, *, device_batch: int, shard_size: int) -> Batch:
    # One stratum of 7 candidates (more if some are rejected): groups of 3 straddle shards of 5.
    # With seed 1, chunking each shard's candidates by device batch (the code before fixed
    # micro-batches) changed 3 of 7 sha256s between shard sizes 5 and 64.
    return batch_create(
        model_run=lora_run,
        target=7,
        diagnoses=["MEL"],
        fst_distribution={6: 1.0},
        seed=1,
        steps=2,
        size=32,
        device_batch=device_batch,
        shard_size=shard_size,
        enqueue=False,
    )


def run_queued(batch: Batch) -> Batch:
    while (
        job := Job.objects.filter(pk=batch.job_id, state=JobState.QUEUED).first()
        or Job.objects.filter(parent_id=batch.job_id, state=JobState.QUEUED).order_by("id").first()
    ) is not None:
        assert execute_job(job_id=job.pk) == "succeeded", job.title
    batch.refresh_from_db()
    return batch


def generate(lora_run, *, device_batch: int, shard_size: int) -> Batch:
    batch = run_queued(create(lora_run, device_batch=device_batch, shard_size=shard_size))
    assert batch.state == BatchState.FINISHED, batch.error
    return batch


def hashes(batch: Batch) -> dict[tuple[str, int, int], str]:
    return {
        (s.diagnosis, s.fst, s.index): s.image.sha256
        for s in Sample.objects.filter(batch=batch).select_related("image")
    }


def this_machine() -> dict:
    """The environment the shards recorded (they ran in this process, on this device)."""
    cuda = torch.cuda.is_available()
    return pixel_environment("cuda" if cuda else "cpu", torch.float16 if cuda else torch.float32)


def test_shard_size_and_resumed_shards_leave_every_sha256_unchanged(lora_run):
    # 5 cuts the device groups of 3 at shard boundaries; 64 is the whole batch in one shard.
    batches = {size: generate(lora_run, device_batch=3, shard_size=size) for size in (5, 64)}
    reference = hashes(batches[64])
    assert len(reference) >= 7
    assert hashes(batches[5]) == reference, "shard size 5"
    assert Job.objects.filter(parent=batches[5].job, kind="generation.shard").count() >= 2
    for batch in batches.values():
        record = batch.reproducibility
        assert batch.micro_batch == record["micro_batch"] == 3
        assert record["environments"] == [this_machine()]  # one machine, recorded once

    # A resumed shard: an earlier attempt stored candidates 1 and 4 (one in each of the first
    # two groups); the batch's shard then skips them and generates the rest around them.
    batch = create(lora_run, device_batch=3, shard_size=64)
    assert execute_job(job_id=batch.job_id) == "succeeded"  # the reference, then the shard plan
    earlier = job_create(
        kind="generation.shard",
        queue="gpu",
        parent=batch.job,
        params={"batch_id": batch.pk, "ranges": [["MEL", 6, 1, 2], ["MEL", 6, 4, 5]]},
        title="an earlier attempt",
        enqueue=False,
        require_broker=False,
    )
    assert execute_job(job_id=earlier.pk) == "succeeded"
    assert set(hashes(batch)) == {("MEL", 6, 1), ("MEL", 6, 4)}
    batch = run_queued(batch)
    assert batch.state == BatchState.FINISHED, batch.error
    resumed = (
        Job.objects.filter(parent=batch.job, kind="generation.shard")
        .exclude(pk=earlier.pk)
        .order_by("id")
        .first()
    )
    assert resumed.params["ranges"] == [["MEL", 6, 0, 7]]
    assert any(
        e.message == "7 candidates, 2 already stored or not needed"
        for e in resumed.log_entries.all()
    )
    assert hashes(batch) == reference


def test_the_device_batch_is_recorded_as_what_the_pixels_depend_on(lora_run, capsys):
    """Device batch 1, 2, 3 and 8: each batch records its micro-batch size and the machine;
    the sha256s may differ between them (rounding), and the test reports how many do."""
    runs = {g: generate(lora_run, device_batch=g, shard_size=5) for g in (1, 2, 3, 8)}
    reference = hashes(runs[1])
    differ = {}
    for g, batch in runs.items():
        assert batch.reproducibility["micro_batch"] == batch.micro_batch == g
        assert batch.reproducibility["environments"] == [this_machine()]
        assert "micro-batch size" in batch.reproducibility["note"]
        other = hashes(batch)
        common = set(other) & set(reference)
        assert len(common) >= 7
        differ[g] = sum(other[k] != reference[k] for k in common)
    with capsys.disabled():
        print(f"\ncandidates whose sha256 differs from device batch 1's: {differ}")
    assert differ[1] == 0
