"""The batch's decision step on crafted candidates: verdicts in seed order with the right
reasons, top-up shards sized by the acceptance rate, surplus after the quota, the report."""

import numpy as np
import pytest

from generation.advance import batch_advance
from generation.models import BatchState, Verdict
from jobs.models import Job
from tests.factories import BatchFactory, SampleFactory

pytestmark = pytest.mark.django_db

BLACK = "brightness 0.000 outside [0.1, 0.9]"
WRONG_CLASS = "confidence 0.120 < 0.600"


def vector(*values: float) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def crafted_batch(*, clip_calibrated: bool, apply_uncalibrated=()):
    return BatchFactory(
        state=BatchState.GENERATING,
        quotas={"MEL:5": 2},
        overgeneration=3.0,
        job__runs_here=True,
        planned={"MEL:5": 3},
        scoring={"apply_uncalibrated": list(apply_uncalibrated)},
        provenance={"clip": {"calibrated": clip_calibrated, "label": "clip"}},
    )


def add(batch, index, *, failed=(), embedding=(1.0, 0.0, 0.0)):
    return SampleFactory(
        batch=batch,
        diagnosis="MEL",
        fst=5,
        index=index,
        failed_checks=list(failed),
        clip_embedding=vector(*embedding),
    )


def verdicts(batch):
    return [(s.index, s.verdict, s.reasons) for s in batch.samples.order_by("index")]


def test_verdicts_follow_seed_order_with_the_reason_of_each_failure():
    batch = crafted_batch(clip_calibrated=True)
    add(batch, 0, failed=[BLACK])
    add(batch, 1, embedding=(1.0, 0.0, 0.0))
    add(batch, 2, embedding=(0.99, 0.05, 0.0))  # cosine 0.9987 to #1: a near-duplicate
    batch_advance(batch_id=batch.pk)
    assert verdicts(batch) == [
        (0, Verdict.REJECTED, [BLACK]),
        (1, Verdict.ACCEPTED, []),
        (2, Verdict.REJECTED, ["near-duplicate of an accepted image"]),
    ]
    # One accepted out of three decided: the top-up assumes a 1/3 rate for the missing image.
    batch.refresh_from_db()
    shard = Job.objects.get(parent=batch.job, kind="generation.shard")
    assert shard.params["ranges"] == [["MEL", 5, 3, 6]] and batch.planned["MEL:5"] == 6
    assert batch.state == BatchState.GENERATING

    add(batch, 3, failed=[WRONG_CLASS], embedding=(0.0, 1.0, 0.0))
    batch_advance(batch_id=batch.pk)  # index 4 not stored yet: nothing more is decided
    assert verdicts(batch)[-1] == (3, Verdict.REJECTED, [WRONG_CLASS])
    assert Job.objects.filter(parent=batch.job, kind="generation.shard").count() == 1

    add(batch, 5, embedding=(0.0, 0.0, 1.0))  # stored out of order: waits for #4
    batch_advance(batch_id=batch.pk)
    assert verdicts(batch)[-1] == (5, Verdict.PENDING, [])
    add(batch, 4, embedding=(0.0, 0.0, 1.0))
    result = batch_advance(batch_id=batch.pk)
    assert verdicts(batch)[-2:] == [
        (4, Verdict.ACCEPTED, []),
        (5, Verdict.SURPLUS, ["quota met by earlier seeds"]),
    ]
    batch.refresh_from_db()
    assert result["state"] == BatchState.REPORTING == batch.state
    assert batch.outcomes == {"MEL:5": {"accepted": 2, "shortfall": 0}}
    assert Job.objects.filter(parent=batch.job, kind="generation.report").count() == 1

    # Once reporting, a late candidate changes nothing; advancing again is harmless.
    add(batch, 6)
    batch_advance(batch_id=batch.pk)
    assert Job.objects.filter(parent=batch.job, kind="generation.report").count() == 1
    assert batch.samples.get(index=6).verdict == Verdict.PENDING


def test_an_uncalibrated_duplicate_check_does_not_reject_unless_asked():
    off = crafted_batch(clip_calibrated=False)
    on = crafted_batch(clip_calibrated=False, apply_uncalibrated=["duplicate"])
    for batch in (off, on):
        add(batch, 0)
        add(batch, 1)  # identical embedding
        batch_advance(batch_id=batch.pk)
    assert [v for _, v, _ in verdicts(off)] == [Verdict.ACCEPTED, Verdict.ACCEPTED]
    assert [v for _, v, _ in verdicts(on)] == [Verdict.ACCEPTED, Verdict.REJECTED]


def test_a_spent_cap_ends_the_stratum_with_its_shortfall():
    batch = crafted_batch(clip_calibrated=True)
    batch.planned = {"MEL:5": 6}
    batch.save()
    for i in range(6):
        add(batch, i, failed=[BLACK] if i != 2 else [], embedding=(1.0, float(i), 0.0))
    batch_advance(batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.outcomes == {"MEL:5": {"accepted": 1, "shortfall": 1}}
    assert batch.state == BatchState.REPORTING
    assert not Job.objects.filter(parent=batch.job, kind="generation.shard").exists()
