"""A joint-refinement run generates: TI -> LoRA -> joint on the tiny model, then the joint
model's lineage loads into a generator with the joint run's refined tokens and LoRA."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fairskin.diffusion.artifacts import load_run_artifacts, load_token_embeddings
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.training import train
from fairskin.generation.sampler import BatchGenerator
from fairskin.progress import SilentProgress
from tests.fairskin.diffusion.drawn import drawn_items

torch.set_num_threads(1)
QUICK = {
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
    "batch_size": 2,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return drawn_items(
        tmp_path_factory.mktemp("images"), [("MEL", 2), ("MEL", 6), ("NV", 3), ("NV", 5)]
    )


def _train(kind, tiny, items, run_dir, parents=(), **overrides):
    return train(
        config=TrainConfig.build(kind, {"steps": 2, **QUICK, **overrides}),
        base=tiny,
        items=items,
        run_dir=run_dir,
        parents=list(parents),
        progress=SilentProgress(),
    )


@pytest.fixture(scope="module")
def lineage(tiny, items, tmp_path_factory):
    """The three runs' folders, as the engine writes them: TI -> LoRA -> joint."""
    root = tmp_path_factory.mktemp("runs")
    ti, lora, joint = root / "run-1", root / "run-2", root / "run-3"
    _train("textual_inversion", tiny, items, ti)
    _train("lora", tiny, items, lora, [ti])
    # A learning rate that surely moves the tokens in two steps.
    _train("joint", tiny, items, joint, [ti, lora], learning_rate=1e-2)
    return ti, lora, joint


def test_joint_refinement_changes_the_tokens_its_parent_learned(lineage):
    ti, _, joint = lineage
    before, after = load_token_embeddings(ti), load_token_embeddings(joint)
    assert set(before) == set(after) and "<dx-mel>" in after
    # The situation the loader must handle: the same token, two embeddings in one lineage.
    assert all(not torch.equal(before[t], after[t]) for t in after)


def test_the_joint_lineage_generates_with_the_joint_runs_tokens(tiny, lineage):
    ti, lora, joint = lineage
    generator = BatchGenerator(tiny, [ti, lora, joint], scheduler="ddim", device="cpu")

    refined = load_token_embeddings(joint)
    pipe = generator.pipe
    table = pipe.text_encoder.get_input_embeddings().weight
    for token, vector in refined.items():
        assert torch.equal(table[pipe.tokenizer.convert_tokens_to_ids(token)].detach(), vector)
    assert set(generator.tokens) == set(refined)
    # The joint run's LoRA is the one active (named after its file's content).
    (adapter,) = pipe.unet.active_adapters()
    lora_bytes = (joint / "pytorch_lora_weights.safetensors").read_bytes()
    assert lora_bytes != (lora / "pytorch_lora_weights.safetensors").read_bytes()
    import hashlib

    assert adapter == f"fairskin_{hashlib.sha256(lora_bytes).hexdigest()[:16]}"

    images = generator.generate(["a photo of <dx-mel> <fst-6>"] * 2, [1, 2], steps=2)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    # Different seeds, different images: the pipeline really ran.
    assert not torch.equal(images[0], images[1])


def test_the_joint_runs_tokens_win_whatever_the_order_of_loading_within_the_lineage(tiny, lineage):
    from diffusers import StableDiffusionPipeline

    ti, lora, joint = lineage
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path)
    tokens = load_run_artifacts(pipe, [ti, lora, joint])
    assert tokens == list(load_token_embeddings(ti))  # the order tokens were first defined in
    token = "<dx-mel>"
    row = pipe.text_encoder.get_input_embeddings().weight[
        pipe.tokenizer.convert_tokens_to_ids(token)
    ]
    assert torch.equal(row.detach(), load_token_embeddings(joint)[token])
    assert not torch.equal(row.detach(), load_token_embeddings(ti)[token])


def test_an_old_joint_run_without_an_identity_record_is_linked_by_its_manifest(
    tiny, lineage, tmp_path
):
    """Runs trained before identity records existed still name their parents' folders in
    their manifest."""
    from diffusers import StableDiffusionPipeline

    ti, lora, joint = lineage
    old = tmp_path / joint.name
    shutil.copytree(joint, old)
    (old / "identity.json").unlink()
    assert json.loads((old / "manifest.json").read_text())["parents"] == [str(ti), str(lora)]
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path)
    load_run_artifacts(pipe, [ti, lora, old])
    row = pipe.text_encoder.get_input_embeddings().weight[
        pipe.tokenizer.convert_tokens_to_ids("<dx-nv>")
    ]
    assert torch.equal(row.detach(), load_token_embeddings(joint)["<dx-nv>"])


def test_a_token_two_unrelated_runs_define_differently_is_still_refused(tiny, items, lineage):
    """Two textual-inversion runs trained side by side (siblings, neither trained from the
    other) give the same token two embeddings: which one is meant is ambiguous."""
    from diffusers import StableDiffusionPipeline

    ti, _, joint = lineage
    sibling = ti.parent / "run-9"
    _train("textual_inversion", tiny, items, sibling, seed=5, learning_rate=1e-2)
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path)
    size = len(pipe.tokenizer)
    with pytest.raises(ValueError, match=r"different embeddings.*does not record .*run-1"):
        load_run_artifacts(pipe, [ti, sibling])
    # Nor may a joint run's tokens override a run it was not trained from.
    with pytest.raises(ValueError, match=r"does not record .*run-9"):
        load_run_artifacts(pipe, [sibling, joint])
    assert len(pipe.tokenizer) == size  # nothing was loaded
