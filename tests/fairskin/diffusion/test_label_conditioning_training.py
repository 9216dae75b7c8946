"""Label conditioning in a LoRA run on the tiny model: off by default, refused where it cannot
train, learned from zero, saved in the run folder, resumed exactly after a kill."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.checkpoints import latest_checkpoint
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.labels_conditioning import (
    FILENAME,
    attach_labels,
    attached_labels,
    label_indices,
    load_labels,
)
from fairskin.diffusion.training import train
from fairskin.progress import SilentProgress
from tests.fairskin.diffusion.drawn import drawn_items

torch.set_num_threads(1)
CELLS = [("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5), ("OTHER", 3), ("DF", 5)]
FAST = {
    "validation_every": 10_000,
    "validation_inference_steps": 1,
    "lr_warmup_steps": 0,
    "grad_accumulation": 1,
    "batch_size": 2,
    "diversity_weight": 0.0,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return drawn_items(tmp_path_factory.mktemp("images"), CELLS)


@pytest.fixture(scope="module")
def ti(tiny, items, tmp_path_factory):
    config = TrainConfig.build("textual_inversion", {"steps": 1, **FAST})
    return train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("ti"),
        progress=SilentProgress(),
    ).run_dir


def lora_config(**extra):
    return TrainConfig.build(
        "lora",
        {"steps": 6, "learning_rate": 1e-2, "label_conditioning": True, **FAST, **extra},
    )


def test_label_conditioning_is_off_by_default_and_validated():
    for kind in ("textual_inversion", "lora", "joint"):
        config = TrainConfig.build(kind)
        assert config.label_conditioning is False and config.label_dropout == 0.1
        assert config.label_learning_rate == 1e-3
    with pytest.raises(ConfigError, match="label_conditioning needs a LoRA or joint run"):
        TrainConfig.build("textual_inversion", {"label_conditioning": True})
    with pytest.raises(ConfigError, match=r"label_dropout must be in \[0, 1\), got 1"):
        TrainConfig.build("lora", {"label_conditioning": True, "label_dropout": 1})
    with pytest.raises(ConfigError, match="label_conditioning must be"):
        TrainConfig.build("lora", {"label_conditioning": "yes"})
    for bad in (0, -1e-3, float("inf"), True):
        with pytest.raises(ConfigError, match="label_learning_rate must be a (positive )?number"):
            TrainConfig.build("lora", {"label_conditioning": True, "label_learning_rate": bad})


def test_a_lora_run_learns_labels_from_zero_and_saves_them(tiny, items, ti, tmp_path):
    result = train(
        config=lora_config(),
        base=tiny,
        items=items,
        run_dir=tmp_path,
        parents=[ti],
        progress=SilentProgress(),
    )
    module = attached_labels(result.unet)
    assert module is not None
    # Learned away from zero where there were images; no image of skin type IV, nor of BKL
    # (the OTHER image teaches only its skin type), so their rows stay exactly zero.
    assert module.dx.abs().max() > 0 and module.fst.abs().max() > 0
    assert module.fst[3].abs().max() == 0
    assert module.dx[4].abs().max() == 0  # BKL
    saved = load_labels(tmp_path / FILENAME)
    assert torch.equal(saved.table(), module.table().cpu())
    # The artifact drives a fresh UNet from the base.
    fresh = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet").eval()
    attach_labels(fresh, saved)
    latents = torch.randn(1, 4, fresh.config.sample_size, fresh.config.sample_size)
    text = torch.randn(1, 77, fresh.config.cross_attention_dim)
    with torch.no_grad():
        a = fresh(latents, 50, text, class_labels=label_indices([("MEL", 6)])).sample
        b = fresh(latents, 50, text, class_labels=label_indices([(None, None)])).sample
    assert (a - b).abs().max() > 0
    counts = __import__("json").loads((tmp_path / "training_report.json").read_text())
    assert counts["trainable_parameters"]["labels"] == 13 * module.width


def test_a_run_without_labels_writes_no_label_file(tiny, items, ti, tmp_path):
    result = train(
        config=lora_config(label_conditioning=False, steps=1),
        base=tiny,
        items=items,
        run_dir=tmp_path,
        parents=[ti],
        progress=SilentProgress(),
    )
    assert attached_labels(result.unet) is None and not (tmp_path / FILENAME).exists()


class CrashAt(SilentProgress):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def update(self, done, total, message=""):
        super().update(done, total, message)
        if done == self.step:
            raise RuntimeError("worker killed")


def test_a_killed_labelled_run_resumes_to_the_uninterrupted_labels(tiny, items, ti, tmp_path):
    config = lora_config(checkpoint_every=2)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="worker killed"):
        train(
            config=config,
            base=tiny,
            items=items,
            run_dir=crashed,
            parents=[ti],
            progress=CrashAt(5),
        )
    assert latest_checkpoint(crashed).name == "step-000004"
    resumed = train(
        config=config,
        base=tiny,
        items=items,
        run_dir=crashed,
        parents=[ti],
        progress=SilentProgress(),
    )
    straight = train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path / "straight",
        parents=[ti],
        progress=SilentProgress(),
    )
    assert resumed.resumed_from == 4
    a, b = attached_labels(resumed.unet), attached_labels(straight.unet)
    assert a.fst.abs().max() > 0
    assert torch.allclose(a.dx, b.dx, atol=1e-6) and torch.allclose(a.fst, b.fst, atol=1e-6)


def test_runs_without_labels_keep_the_settings_hash_they_had_before_label_settings():
    from fairskin.diffusion.checkpoints import run_identity
    from fairskin.provenance import settings_hash

    def identity(config):
        return run_identity(
            identity="r", config=config, base_model="tiny", selection_hash="s", parents=[]
        )

    before = TrainConfig.build("lora").to_dict()
    assert before.pop("label_conditioning") is False and before.pop("label_dropout") == 0.1
    assert before.pop("label_learning_rate") == 1e-3  # added later still, left out the same way
    # The image-prompt settings (added later) are left out the same way when off.
    assert before.pop("image_prompt") is False
    before = {k: v for k, v in before.items() if not k.startswith("image_prompt")}
    assert before.pop("processes") == 1  # where a run trains (issue 19) never counts
    # A checkpoint written before the settings existed hashed exactly `before`.
    assert identity(TrainConfig.build("lora").to_dict())["settings_hash"] == settings_hash(before)
    on = identity(TrainConfig.build("lora", {"label_conditioning": True}).to_dict())
    other = {"label_conditioning": True, "label_dropout": 0.2}
    assert on["settings_hash"] != settings_hash(before)
    assert (
        identity(TrainConfig.build("lora", other).to_dict())["settings_hash"] != on["settings_hash"]
    )
    faster = {"label_conditioning": True, "label_learning_rate": 1e-2}
    assert (
        identity(TrainConfig.build("lora", faster).to_dict())["settings_hash"]
        != on["settings_hash"]
    )
    # Off, the label learning rate changes nothing: it trains nothing then.
    assert identity(TrainConfig.build("lora", {"label_learning_rate": 1e-2}).to_dict())[
        "settings_hash"
    ] == settings_hash(before)


def test_the_label_tables_train_at_their_own_learning_rate(tiny, items, ti, tmp_path):
    """Two runs that differ only in label_learning_rate: the LoRA's first step is the same,
    the label tables' first step scales with their rate (Adam's first step is lr * sign)."""
    from fairskin.diffusion.training_setup import parameter_groups

    rows = {}
    for rate in (1e-3, 1e-2):
        config = lora_config(steps=1, label_learning_rate=rate, label_dropout=0.0)
        result = train(
            config=config,
            base=tiny,
            items=items,
            run_dir=tmp_path / f"r{rate}",
            parents=[ti],
            progress=SilentProgress(),
        )
        labels = attached_labels(result.unet)
        groups = parameter_groups(list(result.unet.parameters()), config, labels)
        assert [g["lr"] for g in groups] == [1e-2, rate]
        assert {id(p) for p in groups[1]["params"]} == {id(labels.dx), id(labels.fst)}
        lora = {n: p.detach().clone() for n, p in result.unet.named_parameters() if "lora" in n}
        rows[rate] = (labels.fst.detach().clone(), lora)
    slow, fast = rows[1e-3], rows[1e-2]
    moved = slow[0].abs() > 0  # the rows of the types in the first batch took a step
    assert moved.any()
    assert torch.allclose(fast[0][moved], 10 * slow[0][moved], rtol=1e-3)
    assert all(torch.equal(slow[1][n], fast[1][n]) for n in slow[1])
    without = parameter_groups(list(result.unet.parameters()), lora_config(), None)
    assert len(without) == 1 and without[0]["lr"] == 1e-2


def test_a_joint_run_continues_the_labels_of_its_lora_parent(tiny, items, ti, tmp_path):
    lora = train(
        config=lora_config(),
        base=tiny,
        items=items,
        run_dir=tmp_path / "lora",
        parents=[ti],
        progress=SilentProgress(),
    )
    parent = load_labels(lora.run_dir / FILENAME)
    assert parent.dx.abs().max() > 1e-3
    joint = train(
        config=TrainConfig.build(
            "joint",
            {
                "steps": 1,
                "learning_rate": 1e-7,
                "label_learning_rate": 1e-7,  # one negligible step: the tables stay put
                "label_conditioning": True,
                **FAST,
            },
        ),
        base=tiny,
        items=items,
        run_dir=tmp_path / "joint",
        parents=[ti, lora.run_dir],
        progress=SilentProgress(),
    )
    continued = attached_labels(joint.unet)
    assert torch.allclose(continued.dx.detach().cpu(), parent.dx, atol=1e-5)
    assert torch.allclose(continued.fst.detach().cpu(), parent.fst, atol=1e-5)
    assert (joint.run_dir / FILENAME).is_file()
