"""Fault: the worker preparing a study stalls (SIGSTOP) past its lease, another worker takes
over and opens the study, a dermatologist rates, and then the stalled worker wakes (SIGCONT).

Before the lifecycle work the woken attempt's LeaseLost fell into the handler's catch-all,
which marked the open study failed (closed to raters) while its job read succeeded. Now the
woken attempt finds its lease gone at its next write, removes the files it wrote, and ends
without writing anything: the study stays open and rating goes on.
"""

from __future__ import annotations

import io
import os
import signal
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from jobs.models import Job, JobState
from review.models import Assignment, Rating, Study, StudyState
from review.services.rating import rating_submit
from review.services.study import study_create
from tests.conftest import wait_for
from tests.factories import BatchFactory, DatasetFactory, ImageFactory, SampleFactory, make_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {"FAIRSKIN_JOB_LEASE_SECONDS": "3", "FAIRSKIN_SWEEP_SECONDS": "1"}
SYNTHETIC = 90  # enough 640-px images that blinding them takes several seconds


def noise_png(seed: int, side: int = 640) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def slow_batch():
    batch = BatchFactory(state="finished", quotas={"MEL:5": SYNTHETIC}, diagnoses=["MEL"])
    for index in range(SYNTHETIC):
        image = ImageFactory(
            dataset=batch.dataset,
            origin="synthetic",
            diagnosis="MEL",
            fst_low=5,
            fst_high=5,
            source_id=f"MEL-fst5-{index}",
        )
        image.preprocessed.save("s.png", ContentFile(noise_png(index)))
        SampleFactory(
            batch=batch, image=image, diagnosis="MEL", fst=5, index=index, verdict="accepted"
        )
    real = DatasetFactory(name="real-clinic")
    for i in range(20):
        image = ImageFactory(
            dataset=real,
            origin="real",
            diagnosis="MEL",
            fst_low=5,
            fst_high=5,
            source_id=f"real-{i}",
        )
        image.preprocessed.save(f"real-{i}.png", ContentFile(noise_png(1000 + i)))
    return batch


def rate_next(study: Study, rater) -> Rating:
    assignment = (
        Assignment.objects.filter(study=study, rater=rater, rating__isnull=True)
        .order_by("position")
        .first()
    )
    rating, created = rating_submit(token=assignment.token, rater=rater, score=5, seconds=2.0)
    assert created
    return rating


def test_a_stalled_preparation_that_wakes_after_a_takeover_changes_nothing(start_worker):
    batch = slow_batch()
    raters = [make_user("dermatologist", username=f"stall-derm-{i}") for i in range(3)]
    study = study_create(
        batch=batch, raters=raters, sample_size=SYNTHETIC, control_ratio=0.2, seed=3
    )
    first = start_worker(queues="cpu", **FAST)

    def job() -> Job:
        return Job.objects.get(pk=study.job_id)

    wait_for(
        lambda: job().progress_phase == "Blinding images" and job().progress_done >= 10,
        timeout=120,
        what="the first attempt blinding images",
        workers=[first],
    )
    os.killpg(first.proc.pid, signal.SIGSTOP)
    stalled_at = job().progress_done
    try:
        second = start_worker(queues="cpu", WITH_BEAT="1", **FAST)
        done = wait_for(
            lambda: job().state == JobState.SUCCEEDED and job(),
            timeout=180,
            what="the second attempt to open the study",
            workers=[first, second],
        )
        assert done.attempt == 2
        study.refresh_from_db()
        assert study.state == StudyState.OPEN
        rate_next(study, raters[0])
    finally:
        os.killpg(first.proc.pid, signal.SIGCONT)
    woke = time.monotonic()
    wait_for(
        lambda: "lease lost" in first.output(),
        timeout=60,
        what="the woken attempt to notice it lost the job",
        workers=[first],
    )
    time.sleep(1.0)  # let it finish whatever it would still do

    study.refresh_from_db()
    final = job()
    assert study.state == StudyState.OPEN and study.error == ""
    assert final.state == JobState.SUCCEEDED and final.attempt == 2
    assert list(final.attempts.order_by("number").values_list("outcome", flat=True)) == [
        "lost",
        "succeeded",
    ]
    assert not final.log_entries.filter(attempt=1, level="error").exists()
    # Rating goes on: the next rating of every rater is accepted.
    for rater in raters:
        rate_next(study, rater)
    assert Rating.objects.filter(assignment__study=study).count() == 4
    # The stalled attempt removed the blinded files it had written: only the items' remain.
    folder = f"review/{study.identity}"  # the study's own folder (issue 15: identity-named)
    on_disk = {f"{folder}/{name}" for name in default_storage.listdir(folder)[1]}
    assert on_disk == {item.derivative.name for item in study.items.all()}
    print(
        f"\nstalled at image {stalled_at}; the second attempt opened the study; the woken "
        f"attempt noticed within {time.monotonic() - woke:.1f}s and wrote nothing"
    )
