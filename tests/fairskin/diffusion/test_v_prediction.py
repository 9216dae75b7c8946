"""Base models that predict v: the target, the min-SNR weights and the clean-latent estimate
against hand-computed values, and a training step on a tiny v-prediction model."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from diffusers import DDPMScheduler

from fairskin.diffusion.base_models import BaseModelError, resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.losses import (
    DenoisingObjective,
    denoising_loss,
    min_snr_weights,
    predicted_clean_latents,
)
from fairskin.diffusion.training import TrainItem, train
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


def sd15_scheduler(prediction_type: str) -> DDPMScheduler:
    return DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        num_train_timesteps=1000,
        prediction_type=prediction_type,
    )


def test_min_snr_weights_for_noise_and_for_v_by_hand():
    snr = torch.tensor([0.5, 5.0, 50.0])
    # epsilon: min(SNR, 5) / SNR
    assert min_snr_weights(snr, 5.0).tolist() == pytest.approx([1.0, 1.0, 0.1])
    # v: min(SNR, 5) / (SNR + 1)
    assert min_snr_weights(snr, 5.0, "v_prediction").tolist() == pytest.approx(
        [0.5 / 1.5, 5.0 / 6.0, 5.0 / 51.0]
    )


def test_an_unknown_prediction_type_is_refused_by_name():
    with pytest.raises(ValueError, match="'sample' cannot be trained.*epsilon or v_prediction"):
        min_snr_weights(torch.ones(2), 5.0, "sample")
    with pytest.raises(ValueError, match="'sample'"):
        predicted_clean_latents(torch.ones(1, 1), torch.ones(1, 1), torch.ones(1), "sample")
    with pytest.raises(ValueError, match="'sample'"):
        DenoisingObjective(sd15_scheduler("sample"), torch.device("cpu"))


def test_the_weighted_loss_by_hand():
    pred = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    # per-sample MSE: (1 + 4) / 2 = 2.5 and (4 + 4) / 2 = 4
    snr = torch.tensor([10.0, 1.0])
    plain = denoising_loss(pred, target)
    eps = denoising_loss(pred, target, snr=snr, gamma=5.0)
    v = denoising_loss(pred, target, snr=snr, gamma=5.0, prediction_type="v_prediction")
    assert plain.item() == pytest.approx((2.5 + 4.0) / 2)
    assert eps.item() == pytest.approx((2.5 * 5 / 10 + 4.0 * 1 / 1) / 2)
    assert v.item() == pytest.approx((2.5 * 5 / 11 + 4.0 * 1 / 2) / 2)


def test_v_target_and_clean_latents_by_hand_at_one_timestep():
    scheduler = sd15_scheduler("v_prediction")
    objective = DenoisingObjective(scheduler, torch.device("cpu"))
    t = torch.tensor([500])
    a = float(scheduler.alphas_cumprod[500])
    x0 = torch.tensor([[[[0.8]], [[-0.4]]]])  # (1, 2, 1, 1)
    eps = torch.tensor([[[[0.3]], [[1.1]]]])
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0

    target = objective.target(x0, eps, t)
    assert torch.allclose(target, v, atol=1e-6)
    assert torch.equal(target, scheduler.get_velocity(x0, eps, t))
    assert not torch.allclose(target, eps)
    assert torch.allclose(scheduler.add_noise(x0, eps, t), x_t, atol=1e-6)
    # x0 = sqrt(a) x_t - sqrt(1 - a) v from a velocity; (x_t - sqrt(1 - a) eps) / sqrt(a)
    # from a noise prediction; each formula is wrong for the other's output.
    alphas = scheduler.alphas_cumprod[t]
    assert torch.allclose(objective.clean_latents(x_t, v, t), x0, atol=1e-5)
    assert torch.allclose(predicted_clean_latents(x_t, eps, alphas), x0, atol=1e-5)
    assert not torch.allclose(predicted_clean_latents(x_t, v, alphas), x0, atol=1e-2)
    assert objective.snr(t).item() == pytest.approx(a / (1 - a), rel=1e-5)


def test_the_noise_model_keeps_its_noise_target_and_weights():
    scheduler = sd15_scheduler("epsilon")
    objective = DenoisingObjective(scheduler, torch.device("cpu"))
    x0, eps, t = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.tensor([10, 900])
    assert objective.target(x0, eps, t) is eps
    pred = torch.zeros_like(eps)
    snr = objective.snr(t)
    expected = (eps.pow(2).mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5.0) / snr).mean()
    assert objective.loss(pred, eps, t, gamma=5.0).item() == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def v_model(tmp_path_factory):
    """The tiny model, its scheduler config saying v_prediction (weights unchanged)."""
    tiny = resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))
    folder = tmp_path_factory.mktemp("v") / "tiny-v"
    shutil.copytree(tiny.path, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    assert config["prediction_type"] == "epsilon"
    config_path.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    base = resolve_base_model(str(folder), cache_dir=folder.parent)
    assert base.trainable_prediction_type() == "v_prediction"
    return base


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return drawn_items(tmp_path_factory.mktemp("images"), [("MEL", 2), ("NV", 5)])


def test_a_training_step_on_a_v_model_learns_the_velocity(v_model, items, tmp_path, monkeypatch):
    """The real step on the tiny v-prediction model; the objective is watched (not replaced)
    to see which target reached the loss."""
    seen: list[dict[str, torch.Tensor]] = []
    original_target, original_loss = DenoisingObjective.target, DenoisingObjective.loss

    def watched_target(self, latents, noise, timesteps):
        out = original_target(self, latents, noise, timesteps)
        seen.append(
            {
                "velocity": self.scheduler.get_velocity(latents, noise, timesteps),
                "noise": noise,
                "target": out,
            }
        )
        return out

    def watched_loss(self, pred, target, timesteps, *, gamma):
        seen[-1]["loss_target"] = target
        seen[-1]["weights"] = min_snr_weights(self.snr(timesteps), gamma, "v_prediction")
        seen[-1]["snr"] = self.snr(timesteps)
        return original_loss(self, pred, target, timesteps, gamma=gamma)

    monkeypatch.setattr(DenoisingObjective, "target", watched_target)
    monkeypatch.setattr(DenoisingObjective, "loss", watched_loss)
    result = train(
        config=TrainConfig.build("textual_inversion", {"steps": 2, **QUICK}),
        base=v_model,
        items=items,
        run_dir=tmp_path / "run",
        progress=SilentProgress(),
    )
    assert len(seen) == 2 and math.isfinite(result.final_loss)
    for step in seen:
        assert torch.equal(step["loss_target"], step["target"])
        assert torch.equal(step["target"], step["velocity"])
        assert not torch.allclose(step["target"], step["noise"])
        snr = step["snr"]
        assert torch.allclose(step["weights"], torch.clamp(snr, max=5.0) / (snr + 1))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["base_model_path"] == v_model.path


def test_generation_samples_a_v_model_with_its_own_prediction_type(v_model, items, tmp_path):
    """Every scheduler a batch can pick is built from the model's scheduler config, so it
    keeps prediction_type v_prediction (nothing resets it to epsilon)."""
    from fairskin.generation.options import SCHEDULERS
    from fairskin.generation.sampler import BatchGenerator

    run = tmp_path / "run"
    train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, **QUICK}),
        base=v_model,
        items=items,
        run_dir=run,
        progress=SilentProgress(),
    )
    for name in SCHEDULERS:
        generator = BatchGenerator(v_model, [run], scheduler=name, device="cpu")
        assert generator.pipe.scheduler.config.prediction_type == "v_prediction", name
    images = generator.generate(["a photo of <dx-mel>"], [3], steps=2)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_a_sample_prediction_model_is_refused_naming_the_model_and_value(v_model, tmp_path):
    folder = tmp_path / "tiny-sample"
    shutil.copytree(v_model.path, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "prediction_type": "sample"})
    )
    base = resolve_base_model(str(folder), cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match=r"tiny-sample.*predicts 'sample'"):
        base.trainable_prediction_type()
    with pytest.raises(BaseModelError, match=r"tiny-sample.*predicts 'sample'"):
        train(
            config=TrainConfig.build("textual_inversion", {"steps": 1, **QUICK}),
            base=base,
            items=[TrainItem(str(tmp_path / "none.png"), "MEL", 2)],
            run_dir=tmp_path / "run",
            progress=SilentProgress(),
        )
