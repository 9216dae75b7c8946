"""Batches with class-label guidance (issue 17, part 1): refused unless the model was trained
with label conditioning, generated on the tiny model with its label table, every sample
recording the label it was guided towards, shown on the pages and in the exports."""

import csv
import io
import shutil
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from django.urls import reverse

from fairskin.diffusion.labels_conditioning import (
    FILENAME,
    LabelEmbedding,
    label_index,
    save_labels,
)
from generation.models import Batch, BatchState, Sample
from generation.services import BatchConfigError
from jobs.models import Job
from tests.factories import make_user
from tests.generation.conftest import _finished_run
from tests.generation.test_reference_images import SIZE, create, mel, run_queued
from training.models import RunKind

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled_run(lora_run, tmp_path):
    """The tiny LoRA run's artifacts with a label table beside its LoRA (random vectors of the
    UNet's time-embedding width, 128 on the tiny model)."""
    folder = tmp_path / "labelled"
    shutil.copytree(lora_run.folder, folder)
    module = LabelEmbedding(128)
    with torch.no_grad():
        module.dx.normal_(0, 2.0)
        module.fst.normal_(0, 2.0)
    save_labels(folder / FILENAME, module)
    return _finished_run(RunKind.LORA, folder, parent=lora_run.parent)


def test_label_guidance_is_refused_before_anything_is_created(lora_run, labelled_run, demo):
    narrow = str(labelled_run.folder) + "-narrow"
    shutil.copytree(labelled_run.folder, narrow)
    save_labels(Path(narrow) / FILENAME, LabelEmbedding(64))
    narrow_run = _finished_run(RunKind.LORA, narrow, parent=lora_run.parent)
    before = (Batch.objects.count(), Job.objects.count())
    with pytest.raises(BatchConfigError, match=f"run {lora_run.pk} was not trained with label"):
        create(lora_run, label_scale=2.0)
    with pytest.raises(BatchConfigError, match="the label guidance scale must be from 0 to 20"):
        create(labelled_run, label_scale=-1)
    with pytest.raises(BatchConfigError, match="the label guidance scale must be a number"):
        create(labelled_run, label_scale="2")
    with pytest.raises(BatchConfigError, match="cannot be combined in one batch"):
        create(labelled_run, label_scale=2.0, reference={"image_ids": [mel(demo, "train").pk]})
    with pytest.raises(BatchConfigError, match="its vectors are 64 wide but the base model tiny"):
        create(narrow_run, label_scale=2.0)
    broken = f"{labelled_run.folder}/{FILENAME}"
    with open(broken, "r+b") as fh:
        fh.write(b"\x00" * 16)  # the safetensors header length is now nonsense
    with pytest.raises(BatchConfigError, match=f"run {labelled_run.pk}'s label table cannot"):
        create(labelled_run, label_scale=2.0)
    assert (Batch.objects.count(), Job.objects.count()) == before
    # Scale 0 leaves the labels out, so a model without them is fine.
    assert create(lora_run, label_scale=0.0).label_scale == 0.0


def test_every_sample_records_its_label_and_the_pages_show_it(labelled_run, demo, client):
    batch = run_queued(create(labelled_run, diagnoses=["MEL", "NV"], label_scale=2.5))
    samples = list(Sample.objects.filter(batch=batch).select_related("image"))
    assert {s.diagnosis for s in samples} == {"MEL", "NV"}
    for s in samples:
        assert s.class_label == label_index(s.diagnosis, s.fst)
        assert s.label_scale == 2.5
        assert s.image.metadata["class_label"] == s.class_label
    client.force_login(make_user("engineer", username="eng-labels"))
    page = client.get(reverse("generation:batch", args=[batch.pk])).content.decode()
    assert "Class-label guidance at scale 2.5 beside the text's 7.5" in page
    sample_page = client.get(f"/generation/samples/{samples[0].pk}/").content.decode()
    assert f"label {samples[0].class_label} ({samples[0].diagnosis}, FST" in sample_page
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(f"/generation/batches/{batch.pk}/export/")
                .content.decode()
                .split("\n", 1)[1]
            )
        )
    )
    assert {(r["class_label"], r["label_scale"]) for r in rows} == {
        (str(s.class_label), "2.5") for s in samples
    }


def test_without_label_guidance_samples_record_no_label(labelled_run, demo, client):
    guided = run_queued(create(labelled_run, label_scale=3.0, seed=4))
    plain = run_queued(create(labelled_run, label_scale=0.0, seed=4))
    assert all(s.class_label is None and s.label_scale is None for s in plain.samples.all())
    assert all("class_label" not in s.image.metadata for s in plain.samples.all())
    # Same seeds, same model: the labels are what changes the pixels.
    by_key = {(s.fst, s.index): s.image.sha256 for s in plain.samples.select_related("image")}
    differ = [
        s.image.sha256 != by_key[(s.fst, s.index)]
        for s in guided.samples.select_related("image")
        if (s.fst, s.index) in by_key
    ]
    assert differ and all(differ)
    client.force_login(make_user("engineer", username="eng-plain"))
    page = client.get(reverse("generation:batch", args=[plain.pk])).content.decode()
    assert "No class-label guidance" in page and "Text-to-image: no reference images" in page


def test_the_generate_command_and_the_launch_form_take_a_label_scale(
    lora_run, labelled_run, demo, capsys, client
):
    common = ["--count", "2", "--diagnosis", "MEL", "--fst-distribution", "6=1"]
    common += ["--steps", "4", "--size", str(SIZE), "--seed", "1"]
    with pytest.raises(CommandError, match="was not trained with label conditioning"):
        call_command("generate", "--model", str(lora_run.pk), *common, "--label-scale", "2")
    assert not Batch.objects.exists()
    call_command(
        "generate", "--model", str(labelled_run.pk), *common, "--label-scale", "1.5", "--wait"
    )
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert batch.state == BatchState.FINISHED and batch.label_scale == 1.5
    labels = set(batch.samples.values_list("class_label", "label_scale"))
    assert labels == {(label_index("MEL", 6), 1.5)}
    client.force_login(make_user("engineer", username="eng-form"))
    url = reverse("admin:generation_batch_launch")
    assert 'name="label_scale"' in client.get(url).content.decode()
    form = {
        "model_run": lora_run.pk, "target": 2, "diagnoses": ["MEL"], "overgeneration": 1.5,
        "scheduler": "ddim", "steps": 4, "guidance": 7.5, "negative_prompt": "blurry",
        "size": SIZE, "seed": 3, "shard_size": 64, "device_batch": 8, "scoring": "{}",
        "filter_percentile": 95, **{f"fst_{f}": 1.0 if f == 6 else 0 for f in range(1, 7)},
    }  # fmt: skip
    refused = client.post(url, {**form, "label_scale": 2})
    assert "was not trained with label conditioning" in refused.content.decode()
    assert (
        client.post(url, {**form, "model_run": labelled_run.pk, "label_scale": 2}).status_code
        == 302
    )
    assert Batch.objects.filter(label_scale=2).count() == 1
