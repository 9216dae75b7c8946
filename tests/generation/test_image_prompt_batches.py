"""Batches conditioned on reference images through an image-prompt adapter (issue 17, part 2):
the model's own adapter or a public one configured by FAIRSKIN_IP_ADAPTER_DIR, checked against
the base model at creation; each sample records its reference; the pages say how it was made.
Real batches on the tiny model with a public-layout adapter written key by key."""

import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from safetensors.torch import load_file, save_file

from fairskin.diffusion.base_models import resolve_base_model
from generation.models import Batch, Sample
from generation.services import BatchConfigError
from jobs.models import Job, JobState
from jobs.runner import execute_job
from tests.factories import make_user
from tests.fairskin.diffusion.test_image_prompt import hand_written_adapter
from tests.generation.conftest import _finished_run
from tests.generation.test_reference_images import SIZE, create, mel, run_queued
from training.models import RunKind

pytestmark = pytest.mark.django_db
SELECTION = {"dataset": "demo", "diagnosis": "MEL"}


def tiny():
    from django.conf import settings

    return resolve_base_model("tiny", cache_dir=Path(settings.FAIRSKIN_MODEL_CACHE))


@pytest.fixture
def prompted_run(lora_run, tmp_path):
    """The tiny LoRA run with an image-prompt adapter of its own beside its LoRA."""
    folder = tmp_path / "prompted"
    shutil.copytree(lora_run.folder, folder)
    hand_written_adapter(folder, tiny())
    return _finished_run(RunKind.LORA, folder, parent=lora_run.parent)


def test_image_prompt_batches_are_refused_before_anything_is_created(
    lora_run, prompted_run, demo, tmp_path, settings
):
    settings.FAIRSKIN_IP_ADAPTER_DIR = ""
    wrong = tmp_path / "wrong"
    state = hand_written_adapter(wrong, tiny())
    state["image_proj.norm.weight"] = state["image_proj.norm.weight"][:16]
    save_file(state, str(wrong / "ip_adapter.safetensors"))
    before = (Batch.objects.count(), Job.objects.count())
    with pytest.raises(BatchConfigError, match="the image_prompt reference mode needs reference"):
        create(prompted_run, reference_mode="image_prompt")
    with pytest.raises(BatchConfigError, match=f"run {lora_run.pk} trained no image-prompt"):
        create(lora_run, reference=SELECTION, reference_mode="image_prompt")
    settings.FAIRSKIN_IP_ADAPTER_DIR = str(wrong)
    with pytest.raises(BatchConfigError, match="made for a cross-attention width of 16"):
        create(lora_run, reference=SELECTION, reference_mode="image_prompt")
    with pytest.raises(BatchConfigError, match="the image prompt scale must be from 0 to 2"):
        create(
            prompted_run, reference=SELECTION, reference_mode="image_prompt", image_prompt_scale=3
        )
    with pytest.raises(BatchConfigError, match="unknown reference mode 'ip'"):
        create(prompted_run, reference=SELECTION, reference_mode="ip")
    with pytest.raises(CommandError, match="made for a cross-attention width of 16"):
        call_command(
            "generate", "--model", str(lora_run.pk), "--count", "2", "--size", str(SIZE),
            "--reference-selection", '{"dataset": "demo"}', "--reference-mode", "image_prompt",
        )  # fmt: skip
    assert (Batch.objects.count(), Job.objects.count()) == before


def test_a_batch_conditions_on_its_references_through_the_models_adapter(
    prompted_run, demo, client
):
    train = mel(demo, "train")
    batch = run_queued(create(prompted_run, reference=SELECTION, reference_mode="image_prompt"))
    prompt = batch.reference["image_prompt"]
    assert batch.reference["mode"] == "image_prompt" and batch.reference_strength is None
    assert prompt["source"] == f"run {prompted_run.pk}"
    assert (prompt["tokens"], prompt["scale"]) == (4, 0.6)
    samples = list(Sample.objects.filter(batch=batch))
    assert samples and all(
        (s.reference_image_id, s.reference_strength) == (train.pk, None) for s in samples
    )
    assert all(any(c["name"] == "reference_copy" for c in s.checks) for s in samples)
    client.force_login(make_user("engineer", username="eng-ip"))
    page = client.get(reverse("generation:batch", args=[batch.pk])).content.decode()
    assert (
        f"Image prompts from 1 reference image at scale 0.6 through the image-prompt adapter "
        f"trained with run {prompted_run.pk} (4 tokens"
    ) in page
    assert prompt["sha256"][:12] in page
    sample_page = client.get(f"/generation/samples/{samples[0].pk}/").content.decode()
    assert "(image prompt, scale 0.6" in sample_page


def test_a_public_adapter_serves_a_model_without_one_and_may_not_change_under_a_batch(
    lora_run, demo, tmp_path, settings
):
    public = tmp_path / "h94-like"
    hand_written_adapter(public, tiny(), seed=3)
    shutil.move(public / "ip_adapter.safetensors", public / "ip-adapter_sd15.safetensors")
    settings.FAIRSKIN_IP_ADAPTER_DIR = str(public)
    settings.FAIRSKIN_IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"
    kwargs = {"reference": SELECTION, "reference_mode": "image_prompt", "image_prompt_scale": 1.0}
    batch = run_queued(create(lora_run, **kwargs))
    assert batch.reference["image_prompt"]["source"] == "FAIRSKIN_IP_ADAPTER_DIR"
    assert batch.samples.count() >= 2
    # The adapter file is replaced after a second batch was created: its shard refuses to run.
    second = create(lora_run, seed=9, **kwargs)
    state = load_file(str(public / "ip-adapter_sd15.safetensors"))
    state["image_proj.proj.bias"] += 1
    save_file(state, str(public / "ip-adapter_sd15.safetensors"))
    assert execute_job(job_id=second.job_id) == "succeeded"
    shard = Job.objects.filter(parent_id=second.job_id, state=JobState.QUEUED).first()
    assert execute_job(job_id=shard.pk) == "failed"
    shard.refresh_from_db()
    assert "changed since batch" in shard.error and "sha256 differs" in shard.error
