"""A finished generation batch with accepted images and a catalog of real images, built from
factories (no diffusion needed), and the three dermatologists who rate it."""

import hashlib
import io

import pytest
from django.core.files.base import ContentFile
from PIL import Image as PILImage
from PIL import PngImagePlugin

from jobs.runner import execute_job
from review.models import Study
from review.services.study import study_create
from tests.factories import BatchFactory, DatasetFactory, ImageFactory, SampleFactory, make_user

STRATA = [("MEL", 5), ("MEL", 6), ("NV", 5)]


def png(colour, size=(40, 40), text="") -> bytes:
    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("Comment", text)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg(colour, size=(60, 45)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(
        buffer, format="JPEG", quality=70, comment=b"camera: real clinic"
    )
    return buffer.getvalue()


@pytest.fixture
def batch():
    batch = BatchFactory(
        state="finished", quotas={f"{dx}:{f}": 4 for dx, f in STRATA}, diagnoses=["MEL", "NV"]
    )
    n = 0
    for dx, fst in STRATA:
        for index in range(4):
            n += 1
            data = png((40 + 9 * n, 90, 120), text="synthetic")
            image = ImageFactory(
                dataset=batch.dataset,
                origin="synthetic",
                diagnosis=dx,
                fst_low=fst,
                fst_high=fst,
                source_id=f"{dx}-fst{fst}-{index}",
                sha256=hashlib.sha256(data).hexdigest(),
            )
            image.preprocessed.save("s.png", ContentFile(data))
            SampleFactory(
                batch=batch, image=image, diagnosis=dx, fst=fst, index=index, verdict="accepted"
            )
    # One rejected candidate: never sampled, never released.
    bad = ImageFactory(
        dataset=batch.dataset,
        origin="synthetic",
        diagnosis="MEL",
        fst_low=5,
        fst_high=5,
        source_id="MEL-fst5-9",
    )
    bad.preprocessed.save("r.png", ContentFile(png((0, 0, 0))))
    SampleFactory(batch=batch, image=bad, diagnosis="MEL", fst=5, index=9, verdict="rejected")
    real = DatasetFactory(name="real-clinic")
    for i, (dx, fst) in enumerate([("MEL", 5), ("MEL", 5), ("NV", 5), ("MEL", 4)]):
        image = ImageFactory(
            dataset=real,
            origin="real",
            diagnosis=dx,
            fst_low=fst,
            fst_high=fst,
            source_id=f"real-{i}",
        )
        image.preprocessed.save(f"real-{i}.jpg", ContentFile(jpeg((150 + 20 * i, 100, 80))))
    return batch


@pytest.fixture
def raters():
    return [make_user("dermatologist", username=f"derm-{i}") for i in range(1, 4)]


@pytest.fixture
def lead():
    return make_user("lead", username="lead-1")


def open_study(batch, raters, **options) -> Study:
    options = {"sample_size": 8, "control_ratio": 0.25, "seed": 5, **options}
    study = study_create(batch=batch, raters=raters, enqueue=False, **options)
    assert execute_job(job_id=study.job_id) == "succeeded"
    study.refresh_from_db()
    return study
