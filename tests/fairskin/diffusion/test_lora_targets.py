"""LoRA targets: presets and module-name patterns, checked by form and against the loaded UNet;
cross-attention only by default; trainable parameters counted by hand on the tiny model and
recorded in the run's training report."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from fairskin.diffusion.artifacts import LORA_FILE
from fairskin.diffusion.base_models import TINY_UNET, resolve_base_model
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.lora_targets import (
    DEFAULT_LORA_TARGETS,
    PRESETS,
    expand_lora_targets,
    unmatched_lora_targets,
)
from fairskin.diffusion.reports import TRAINING_REPORT_FILE, read_training_report
from fairskin.diffusion.training import PHASE_TRAINING, train
from fairskin.diffusion.training_setup import check_lora_targets, lora_config
from fairskin.progress import JobCancelled, SilentProgress
from tests.fairskin.diffusion.drawn import drawn_items

torch.set_num_threads(1)
QUICK = {
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
    "batch_size": 2,
    "steps": 1,
}
CROSS = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")

# The tiny UNet's transformer blocks, by hand from TINY_UNET: one in the 32-channel cross-
# attention down block, two in the 32-channel cross-attention up block (layers_per_block + 1),
# one in the 64-channel mid block; text width (cross_attention_dim) 32. A rank-r LoRA on an
# in -> out projection has r * (in + out) parameters. Per block of width d, text width c:
#   attn2: to_q d->d, to_k c->d, to_v c->d, to_out.0 d->d: r * (6d + 2c)
#   attn1: four d->d projections: r * 8d
WIDTHS, TEXT = (32, 32, 32, 64), 32
CROSS_PER_RANK = sum(6 * d + 2 * TEXT for d in WIDTHS)  # 1216
SELF_PER_RANK = sum(8 * d for d in WIDTHS)  # 1280


def test_the_default_is_cross_attention_and_presets_expand_to_module_names():
    assert DEFAULT_LORA_TARGETS == CROSS == PRESETS["cross_attention"]
    assert TrainConfig.build("lora").lora_targets == CROSS
    assert TrainConfig.build("lora", {"lora_targets": ["all_attention"]}).lora_targets == (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
    )
    mixed = TrainConfig.build("lora", {"lora_targets": ["self_attention", "attn2.to_k"]})
    assert mixed.lora_targets == (
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_k",
    )
    # Expanded once: the stored settings name modules, and building them again is stable.
    assert mixed.to_dict()["lora_targets"] == list(mixed.lora_targets)
    again = TrainConfig.build("lora", {"lora_targets": list(mixed.lora_targets)})
    assert again.lora_targets == mixed.lora_targets
    assert expand_lora_targets(["cross_attention", "attn2.to_q"]) == CROSS


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["to_z"], "unknown LoRA target.*'to_z'"),
        (["attn2.to_qq"], "'attn2.to_qq'"),
        (["attn2"], "'attn2'"),  # a block, not a layer LoRA adapts
        (["to_out"], "'to_out'"),  # a ModuleList: the layer is to_out.0
        (["attn2..to_q"], "'attn2..to_q'"),
        (["cross"], "'cross'.*give a preset \\(cross_attention"),
        ([".*to_q"], "'\\.\\*to_q'"),  # no regular expressions
        ([], "no LoRA target given"),
        ("cross_attention", "lora_targets must be a list of names"),
    ],
)
def test_bad_targets_are_refused_by_name(targets, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.build("lora", {"lora_targets": targets})


def _tiny_unet_with(targets, rank):
    unet = UNet2DConditionModel(**TINY_UNET)
    unet.requires_grad_(False)
    config = TrainConfig.build("lora", {"lora_targets": list(targets), "lora_rank": rank})
    check_lora_targets(unet, config.lora_targets)
    unet.add_adapter(lora_config(config))
    adapted = {n.removesuffix(".lora_A") for n, _ in unet.named_modules() if n.endswith("lora_A")}
    return sum(p.numel() for p in unet.parameters() if p.requires_grad), adapted


@pytest.mark.parametrize(
    ("preset", "per_rank", "blocks"),
    [
        ("cross_attention", CROSS_PER_RANK, {"attn2"}),
        ("self_attention", SELF_PER_RANK, {"attn1"}),
        ("all_attention", CROSS_PER_RANK + SELF_PER_RANK, {"attn1", "attn2"}),
    ],
)
def test_presets_adapt_the_attention_they_name_with_the_hand_counted_parameters(
    preset, per_rank, blocks
):
    count, adapted = _tiny_unet_with([preset], rank=4)
    assert count == 4 * per_rank
    assert {part for name in adapted for part in name.split(".") if part.startswith("attn")} == (
        blocks
    )
    assert len(adapted) == 4 * len(WIDTHS) * len(blocks)


def test_one_module_by_its_full_name_is_a_valid_target():
    name = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
    count, adapted = _tiny_unet_with([name], rank=2)
    assert adapted == {name} and count == 2 * (TEXT + 64)


def test_a_target_that_names_no_module_of_the_unet_is_refused():
    unet = UNet2DConditionModel(**TINY_UNET)
    names = [n for n, _ in unet.named_modules()]
    assert unmatched_lora_targets(names, ["cross_attention", "attn3.to_q"]) == ["attn3.to_q"]
    # Well formed (it ends in a layer LoRA adapts), so only the loaded UNet can refuse it.
    config = TrainConfig.build("lora", {"lora_targets": ["attn2.to_q", "down_blocks.7.attn2.to_q"]})
    with pytest.raises(ConfigError, match=r"'down_blocks\.7\.attn2\.to_q' match no module"):
        check_lora_targets(unet, config.lora_targets)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return drawn_items(tmp_path_factory.mktemp("images"), [("MEL", 2), ("NV", 5)])


def _train(kind, tiny, items, run_dir, parents=(), progress=None, **overrides):
    return train(
        config=TrainConfig.build(kind, {**QUICK, **overrides}),
        base=tiny,
        items=items,
        run_dir=run_dir,
        parents=list(parents),
        progress=progress or SilentProgress(),
    )


@pytest.fixture(scope="module")
def ti(tiny, items, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "ti"
    _train("textual_inversion", tiny, items, run_dir)
    return run_dir


def test_trainable_parameters_are_recorded_for_each_kind(tiny, items, ti, tmp_path):
    tokens = json.loads((ti / "manifest.json").read_text())["tokens"]
    embeddings = len(tokens) * 32  # one row of the text encoder's width per new token
    assert len(tokens) == 4  # <dx-mel>, <dx-nv>, <fst-2>, <fst-5>
    assert read_training_report(ti)["trainable_parameters"] == {
        "lora": 0,
        "embeddings": embeddings,
        "total": embeddings,
    }

    lora = tmp_path / "lora"
    _train("lora", tiny, items, lora, [ti], lora_rank=4)
    lora_params = 4 * CROSS_PER_RANK  # 4864
    expected = {"lora": lora_params, "embeddings": 0, "total": lora_params}
    assert read_training_report(lora)["trainable_parameters"] == expected
    assert json.loads((lora / "manifest.json").read_text())["trainable_parameters"] == expected
    # Only cross-attention layers are in the saved LoRA.
    keys = load_file(str(lora / LORA_FILE))
    assert keys and all(".attn2." in k for k in keys)

    joint = tmp_path / "joint"
    _train("joint", tiny, items, joint, [ti, lora], lora_rank=4)
    assert read_training_report(joint)["trainable_parameters"] == {
        "lora": lora_params,
        "embeddings": embeddings,
        "total": lora_params + embeddings,
    }


class _CancelAtTraining(SilentProgress):
    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        super().phase(name, total, done)
        if name == PHASE_TRAINING:
            raise JobCancelled()


def test_the_count_is_recorded_when_training_starts(tiny, items, ti, tmp_path):
    run_dir = tmp_path / "lora"
    with pytest.raises(JobCancelled):
        _train("lora", tiny, items, run_dir, [ti], lora_rank=2, progress=_CancelAtTraining())
    assert not (run_dir / "manifest.json").exists()  # it never got to the end
    report = json.loads((run_dir / TRAINING_REPORT_FILE).read_text())
    assert report["trainable_parameters"] == {
        "lora": 2 * CROSS_PER_RANK,
        "embeddings": 0,
        "total": 2 * CROSS_PER_RANK,
    }


def test_a_run_whose_target_names_no_module_fails_before_training(tiny, items, ti, tmp_path):
    with pytest.raises(ConfigError, match=r"'attn3\.to_q' match no module"):
        _train("lora", tiny, items, tmp_path / "lora", [ti], lora_targets=["attn3.to_q"])
    assert not (tmp_path / "lora" / "loss.csv").exists()


def test_a_joint_run_must_adapt_what_its_lora_parent_adapted(tiny, items, ti, tmp_path):
    lora = tmp_path / "lora"
    _train("lora", tiny, items, lora, [ti], lora_rank=2, lora_targets=["all_attention"])
    with pytest.raises(ConfigError, match=r"continues its LoRA parent's adapter.*to_q"):
        _train("joint", tiny, items, tmp_path / "joint", [ti, lora], lora_rank=2)
    with pytest.raises(ConfigError, match=r"at rank 2.*at rank 4"):
        _train(
            "joint",
            tiny,
            items,
            tmp_path / "joint-rank",
            [ti, lora],
            lora_rank=4,
            lora_targets=["all_attention"],
        )
    # The parent's own settings continue it.
    _train(
        "joint",
        tiny,
        items,
        tmp_path / "joint-ok",
        [ti, lora],
        lora_rank=2,
        lora_targets=["all_attention"],
    )
    assert (tmp_path / "joint-ok" / LORA_FILE).exists()
