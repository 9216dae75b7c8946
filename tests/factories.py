import io
import itertools

import factory
from PIL import Image as PILImage

from accounts.services import user_create
from catalog.models import Dataset, Image, SourceFormat
from generation.models import Batch, Sample
from jobs.models import Job
from training.models import Run

PASSWORD = "correct-horse-battery-staple"
_numbers = itertools.count(1)


def make_user(role: str, username: str | None = None):
    """A user with one role, made through the same service as `manage.py create_user`."""
    from django.contrib.auth.models import Group

    from accounts.permissions import sync_role_groups

    if not Group.objects.filter(name=role).exists():
        # A transactional test before this one flushed the migrations' data: re-create the
        # content types and permissions (post_migrate), then the role groups.
        from django.core.management.sql import emit_post_migrate_signal

        emit_post_migrate_signal(0, False, "default")
        sync_role_groups()
    name = username or f"{role}{next(_numbers)}"
    return user_create(username=name, role=role, password=PASSWORD, validate=False)


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    kind = "worker_check"
    queue = "cpu"
    params = factory.LazyFunction(lambda: {"steps": 2, "pause_s": 0})


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"dataset-{n}")
    source_format = SourceFormat.CSV


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image

    class Params:
        with_thumbnail = factory.Trait(
            thumbnail=factory.django.FileField(
                filename="thumb.jpg", data=factory.LazyFunction(lambda: image_bytes("JPEG"))
            )
        )

    dataset = factory.SubFactory(DatasetFactory)
    source_id = factory.Sequence(lambda n: f"img-{n}")
    file_name = factory.LazyAttribute(lambda o: f"{o.source_id}.png")
    diagnosis = "MEL"
    fst_low = 3
    fst_high = 3
    fst_source = "dataset"


def image_bytes(fmt: str = "PNG", size=(64, 48), colour=(180, 120, 90)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    kind = "textual_inversion"
    base_model = "tiny"
    job = factory.SubFactory(JobFactory, kind="training.run", queue="gpu")
    artifacts_dir = factory.LazyFunction(lambda: "/nonexistent/run")


class BatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Batch

    model_run = factory.SubFactory(RunFactory, kind="lora")
    target = 4
    diagnoses = factory.LazyFunction(lambda: ["MEL"])
    size = 32
    quotas = factory.LazyFunction(lambda: {"MEL:5": 2, "MEL:6": 2})
    dataset = factory.SubFactory(DatasetFactory, source_format=SourceFormat.SYNTHETIC)
    job = factory.SubFactory(JobFactory, kind="generation.prepare", queue="gpu", state="succeeded")


class SampleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sample

    batch = factory.SubFactory(BatchFactory)
    image = factory.SubFactory(
        ImageFactory,
        dataset=factory.SelfAttribute("..batch.dataset"),
        origin="synthetic",
        with_thumbnail=True,
        preprocessed=factory.django.FileField(
            filename="sample.png", data=factory.LazyFunction(image_bytes)
        ),
    )
    diagnosis = "MEL"
    fst = 5
    index = factory.Sequence(lambda n: n)
    seed = factory.Sequence(lambda n: 1000 + n)
    prompt = "a dermoscopy image of <dx-mel>, <fst-5> skin"
    steps = 2
    guidance = 7.5
    scheduler = "ddim"
    clip_embedding = factory.LazyFunction(lambda: bytes(8))
    inception_features = factory.LazyFunction(lambda: bytes(8))
