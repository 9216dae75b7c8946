"""Label-guided generation in the batch sampler, on the tiny model.

A model folder with a LoRA and a label table (random non-zero vectors, so that the labels do
something) is written with the project's own savers; `BatchGenerator` loads it like any run.
"""

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig

from fairskin.diffusion.artifacts import save_lora
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.label_guidance import sample_with_labels
from fairskin.diffusion.labels_conditioning import (
    FILENAME,
    LabelEmbedding,
    lineage_label_file,
    save_labels,
    time_embedding_width,
)
from fairskin.generation.sampler import BatchGenerator

torch.set_num_threads(1)
SIZE, STEPS = 32, 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


def write_run(folder, tiny, *, labels: bool, seed: int = 0):
    """A run folder with a small random LoRA and, if asked, a random label table."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path, safety_checker=None)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_v"], init_lora_weights=False)
    )
    folder.mkdir(parents=True)
    save_lora(folder, pipe.unet)
    if labels:
        module = LabelEmbedding(time_embedding_width(pipe.unet))
        with torch.no_grad():
            module.dx.normal_(0, 2.0)
            module.fst.normal_(0, 2.0)
        save_labels(folder / FILENAME, module)
    return folder


@pytest.fixture(scope="module")
def labelled_run(tiny, tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "labelled", tiny, labels=True)


@pytest.fixture(scope="module")
def labelled(tiny, labelled_run):
    return BatchGenerator(tiny, [labelled_run], scheduler="ddim")


def test_the_label_table_is_the_one_beside_the_loaded_lora(tiny, tmp_path):
    with_labels = write_run(tmp_path / "a", tiny, labels=True)
    without = write_run(tmp_path / "b", tiny, labels=False, seed=1)
    no_lora = tmp_path / "ti"
    no_lora.mkdir()
    assert lineage_label_file([with_labels]) == with_labels / FILENAME
    # A later LoRA without labels is what loads: the earlier table would not match it.
    assert lineage_label_file([with_labels, without]) is None
    assert lineage_label_file([no_lora, with_labels]) == with_labels / FILENAME
    assert lineage_label_file([no_lora]) is None


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm-solver++"])
def test_label_scale_zero_through_the_guided_loop_is_the_plain_pipeline(
    tiny, labelled, labelled_run, scheduler
):
    """The guided sampler draws each candidate's noise from its own generator as the pipeline
    does (DDPM's step noise too; DPM-Solver keeps state between steps), so at label scale 0 it
    reproduces the batch pipeline's pixels."""
    if scheduler != "ddim":
        labelled = BatchGenerator(tiny, [labelled_run], scheduler=scheduler)
    prompts, seeds = ["skin"] * 2, [3, 4]
    plain = labelled.generate(prompts, seeds, steps=STEPS, size=SIZE, guidance=5.0)
    labelled.pipe.unet.class_embedding = labelled.labels  # the null label adds zero
    try:
        looped = sample_with_labels(
            labelled.pipe,
            prompts,
            [("MEL", 6)] * 2,
            text_scale=5.0,
            label_scale=0.0,
            steps=STEPS,
            generators=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            negative_prompt="blurry, low quality, text, watermark, duplicated",
            size=SIZE,
        )
    finally:
        labelled.pipe.unet.class_embedding = None
    assert torch.allclose(looped, plain.cpu(), atol=1e-4)


def test_labels_steer_reproducibly_and_per_candidate(labelled):
    kwargs = {"steps": STEPS, "size": SIZE, "guidance": 5.0, "label_scale": 3.0}
    labels = [("MEL", 1), ("MEL", 6), ("NV", 6)]
    first = labelled.generate(["skin"] * 3, [5, 5, 5], labels=labels, **kwargs)
    again = labelled.generate(["skin"] * 3, [5, 5, 5], labels=labels, **kwargs)
    assert torch.equal(first, again)
    # Same seed, different requested label: different images; the label is what differs.
    assert (first[0] - first[1]).abs().mean() > 0.01
    assert (first[1] - first[2]).abs().mean() > 0.01
    # Its own seed and label, not its batch.
    alone = labelled.generate(["skin"], [5], labels=labels[1:2], **kwargs)
    assert torch.allclose(alone[0], first[1], atol=2e-3)
    # Unguided, the labels are not used at all.
    unguided = labelled.generate(
        ["skin"] * 2, [5, 5], labels=labels[:2], **(kwargs | {"label_scale": 0.0})
    )
    assert torch.equal(unguided[0], unguided[1])
    # The label table is only lent to the UNet: the plain pipeline still runs afterwards.
    assert labelled.pipe.unet.class_embedding is None


def test_label_guidance_is_refused_where_it_cannot_run(tiny, labelled, tmp_path):
    plain = BatchGenerator(tiny, [write_run(tmp_path / "p", tiny, labels=False)])
    assert plain.labels is None
    with pytest.raises(ValueError, match="not trained with label conditioning"):
        plain.generate(["skin"], [1], steps=2, size=SIZE, labels=[("MEL", 6)], label_scale=2.0)
    refs = torch.rand(1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="needs labels and no reference images"):
        labelled.generate(
            ["skin"], [1], steps=4, size=SIZE, init_images=refs, strength=0.5,
            labels=[("MEL", 6)], label_scale=2.0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs labels"):
        labelled.generate(["skin"], [1], steps=2, size=SIZE, label_scale=2.0)
    with pytest.raises(ValueError, match="has no label"):
        labelled.generate(["skin"], [1], steps=2, size=SIZE, labels=[("XYZ", 6)], label_scale=1)
