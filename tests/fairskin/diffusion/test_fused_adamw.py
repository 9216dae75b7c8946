"""Fused AdamW, which training uses on CUDA only (`fused_adamw`), makes the same updates as the
default loop: a LoRA run on the tiny model on CPU with the fused kernel forced on gives the
same losses and the same LoRA weights as the run without it."""

import pytest
import torch
from safetensors.torch import load_file

from fairskin.diffusion import training_setup
from fairskin.diffusion.artifacts import LORA_FILE
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.training import TrainItem, train
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import SilentProgress

FAST = {"validation_every": 10_000, "lr_warmup_steps": 0, "grad_accumulation": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    base = resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))
    folder = tmp_path_factory.mktemp("images")
    items = []
    for i, (dx, fst) in enumerate([("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5)]):
        path = folder / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), dx, fst))
    ti = tmp_path_factory.mktemp("ti")
    config = TrainConfig.build("textual_inversion", {"steps": 1, **FAST})
    train(config=config, base=base, items=items, run_dir=ti, progress=SilentProgress())
    return base, items, ti


def test_fused_only_on_cuda():
    assert training_setup.fused_adamw(torch.device("cuda")) is True
    assert training_setup.fused_adamw(torch.device("cpu")) is None


def test_the_fused_optimizer_trains_the_same_lora(setup, tmp_path, monkeypatch):
    base, items, ti = setup
    config = TrainConfig.build("lora", {"steps": 4, "learning_rate": 1e-3, **FAST})

    def run(name):
        return train(config=config, base=base, items=items, run_dir=tmp_path / name,
                     parents=[ti], progress=SilentProgress())  # fmt: skip

    plain = run("plain")
    asked = []
    monkeypatch.setattr(
        training_setup, "fused_adamw", lambda device: asked.append(device.type) or True
    )
    fused = run("fused")
    assert asked == ["cpu"]  # the forced switch was what built the optimizer
    plain_losses = torch.tensor([loss for _, loss in plain.loss_history])
    fused_losses = torch.tensor([loss for _, loss in fused.loss_history])
    assert len(plain_losses) == 4
    torch.testing.assert_close(fused_losses, plain_losses, rtol=1e-5, atol=1e-6)
    before = load_file(str(tmp_path / "plain" / LORA_FILE))
    after = load_file(str(tmp_path / "fused" / LORA_FILE))
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-6)
    # The LoRA did move: the comparison is of trained weights, not of the initial ones.
    assert any(before[k].abs().max() > 0 for k in before if "lora_B" in k)
