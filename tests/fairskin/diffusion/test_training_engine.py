"""The fine-tuning loop on the tiny model, on CPU, with procedurally drawn images."""

import csv
import math

import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.checkpoints import latest_checkpoint
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.training import (
    PHASE_ARTIFACTS,
    PHASE_LATENTS,
    PHASE_LOADING,
    PHASE_RESUMING,
    PHASE_TRAINING,
    TrainItem,
    clip_gradients,
    train,
)
from fairskin.diffusion.validation_grid import validation_phase
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import JobCancelled, SilentProgress
from tests.fairskin.recording import RecordingProgress

torch.set_num_threads(1)
CELLS = [("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5), ("DF", 3), ("DF", 4)]
FAST = {
    "validation_every": 10_000,
    "validation_inference_steps": 1,
    "lr_warmup_steps": 0,
    "grad_accumulation": 1,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, (dx, fst) in enumerate(CELLS):
        path = folder / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        out.append(TrainItem(str(path), dx, fst))
    return out


@pytest.fixture(scope="module")
def ti_run(tiny, items, tmp_path_factory):
    config = TrainConfig.build("textual_inversion", {"steps": 4, **FAST})
    run_dir = tmp_path_factory.mktemp("ti")
    return train(config=config, base=tiny, items=items, run_dir=run_dir, progress=SilentProgress())


@pytest.fixture(scope="module")
def lora_run(tiny, items, ti_run, tmp_path_factory):
    config = TrainConfig.build(
        "lora", {"steps": 60, "learning_rate": 1e-3, "diversity_weight": 0.0, **FAST}
    )
    return train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("lora"),
        parents=[ti_run.run_dir],
        progress=SilentProgress(),
    )


def test_textual_inversion_changes_only_the_new_rows(tiny, ti_run):
    from transformers import CLIPTextModel

    fresh = CLIPTextModel.from_pretrained(tiny.path, subfolder="text_encoder")
    before = fresh.get_input_embeddings().weight
    after = ti_run.text_encoder.get_input_embeddings().weight
    vocab = before.shape[0]
    assert torch.equal(after[:vocab], before)  # the whole original vocabulary is untouched
    new_ids = ti_run.tokenizer.convert_tokens_to_ids(ti_run.tokens)
    assert min(new_ids) >= vocab and len(new_ids) == len(set(new_ids))
    mole = ti_run.tokenizer.encode("mole", add_special_tokens=False)[0]
    nv = ti_run.tokenizer.convert_tokens_to_ids("<dx-nv>")
    assert not torch.allclose(after[nv], before[mole])  # learned away from its initialiser
    assert set(ti_run.tokens) == {
        "<dx-mel>",
        "<dx-nv>",
        "<dx-df>",
        "<fst-1>",
        "<fst-2>",
        "<fst-3>",
        "<fst-4>",
        "<fst-5>",
        "<fst-6>",
    }
    assert sorted(p.name for p in (ti_run.run_dir / "embeddings").iterdir()) == sorted(
        f"{t.strip('<>')}.safetensors" for t in ti_run.tokens
    )


def _fixed_triples_loss(unet, text_encoder, tokenizer, vae, items, seed=123):
    from diffusers import DDPMScheduler

    from fairskin.diffusion.tokens import prompt_for
    from fairskin.diffusion.training_setup import load_images

    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pixels = load_images(items, list(range(len(items))), 32)
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        latents = latents.repeat(4, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(50, 950, (latents.shape[0],), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        tokens = tokenizer.get_added_vocab()
        prompts = [prompt_for(i.diagnosis, i.fst, available=tokens) for i in items] * 4
        ids = tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, timesteps, hidden).sample
        return torch.nn.functional.mse_loss(pred, noise).item()


def test_lora_lowers_the_loss_on_fixed_image_noise_timestep_triples(tiny, items, lora_run):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(tiny.path, subfolder="vae")
    base_unet = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet").eval()
    lora_run.unet.eval()
    lora_run.text_encoder.eval()
    args = (lora_run.text_encoder, lora_run.tokenizer, vae, items)
    before = _fixed_triples_loss(base_unet, *args)
    after = _fixed_triples_loss(lora_run.unet, *args)
    assert after < before * 0.95, (before, after)
    trained = {n for n, p in lora_run.unet.named_parameters() if "lora_" in n}
    # The default targets: cross-attention only (attn2), as the planning document adapts it.
    assert trained and all(
        any(f"attn2.{t}" in n for t in ("to_q", "to_k", "to_v", "to_out.0")) for n in trained
    )


def test_artifacts_load_into_a_fresh_plain_pipeline_and_change_its_output(tiny, ti_run, lora_run):
    from diffusers import StableDiffusionPipeline

    from fairskin.diffusion.tokens import prompt_for

    def render(pipe, prompt):
        pipe.set_progress_bar_config(disable=True)
        return pipe(
            prompt,
            num_inference_steps=2,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images[0]

    prompt = prompt_for("DF", 6, available=ti_run.tokens)  # a cell with no training image
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path)
    plain = render(pipe, prompt)
    files = sorted(str(p) for p in (ti_run.run_dir / "embeddings").glob("*.safetensors"))
    pipe.load_textual_inversion(files)  # plain diffusers, no project code
    with_tokens = render(pipe, prompt)
    pipe.load_lora_weights(str(lora_run.run_dir))
    with_lora = render(pipe, prompt)
    assert abs(with_tokens - plain).max() > 1e-3
    assert abs(with_lora - with_tokens).max() > 1e-3


class CrashAt(SilentProgress):
    def __init__(self, step, exc):
        super().__init__()
        self.step, self.exc = step, exc

    def update(self, done, total, message=""):
        super().update(done, total, message)
        if done == self.step:
            raise self.exc


def _steps_logged(run_dir):
    with (run_dir / "loss.csv").open() as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    tiny, items, tmp_path
):
    config = TrainConfig.build("textual_inversion", {"steps": 6, "checkpoint_every": 2, **FAST})
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="worker killed"):
        train(
            config=config,
            base=tiny,
            items=items,
            run_dir=crashed,
            progress=CrashAt(5, RuntimeError("worker killed")),
        )
    assert latest_checkpoint(crashed).name == "step-000004"  # step 5 was never checkpointed
    resumed = train(
        config=config, base=tiny, items=items, run_dir=crashed, progress=SilentProgress()
    )
    assert resumed.resumed_from == 4
    assert _steps_logged(crashed) == [1, 2, 3, 4, 5, 6]
    straight = train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path / "straight",
        progress=SilentProgress(),
    )
    for token in straight.tokens:
        a = resumed.text_encoder.get_input_embeddings().weight[
            resumed.tokenizer.convert_tokens_to_ids(token)
        ]
        b = straight.text_encoder.get_input_embeddings().weight[
            straight.tokenizer.convert_tokens_to_ids(token)
        ]
        assert torch.allclose(a, b, atol=1e-6), token
    assert [s for s, _ in resumed.loss_history] == [s for s, _ in straight.loss_history]
    assert [v for _, v in resumed.loss_history] == pytest.approx(
        [v for _, v in straight.loss_history], abs=1e-5
    )


def test_cancelling_saves_a_checkpoint_at_the_current_step(tiny, items, tmp_path):
    config = TrainConfig.build("textual_inversion", {"steps": 5, "checkpoint_every": 100, **FAST})
    with pytest.raises(JobCancelled):
        train(
            config=config,
            base=tiny,
            items=items,
            run_dir=tmp_path,
            progress=CrashAt(3, JobCancelled("cancelled")),
        )
    assert latest_checkpoint(tmp_path).name == "step-000003"
    progress = RecordingProgress()
    assert (
        train(
            config=config, base=tiny, items=items, run_dir=tmp_path, progress=progress
        ).resumed_from
        == 3
    )
    assert [p.name for p in progress.recorded] == [
        PHASE_LOADING,
        PHASE_RESUMING,
        PHASE_TRAINING,
        validation_phase(5),
        PHASE_ARTIFACTS,
    ]
    training = progress.recorded[2]
    # The resumed phase starts at its checkpoint's step, so its rate counts only new steps.
    assert (training.start, training.total) == (3, 5)
    assert [done for done, _, _ in training.updates] == [4, 5]


def test_every_part_of_a_run_is_its_own_phase_and_no_message_carries_an_eta(tiny, items, tmp_path):
    config = TrainConfig.build("textual_inversion", {**FAST, "steps": 4, "validation_every": 2})
    progress = RecordingProgress()
    train(config=config, base=tiny, items=items, run_dir=tmp_path, progress=progress)
    assert [p.name for p in progress.recorded] == [
        PHASE_LOADING,
        PHASE_TRAINING,
        validation_phase(2),
        PHASE_TRAINING,
        validation_phase(4),
        PHASE_ARTIFACTS,
    ]
    _, first, mid_grid, resumed, last_grid, saving = progress.recorded
    assert (first.start, first.total) == (0, 4)
    assert [done for done, _, _ in first.updates] == [1, 2]  # step 2 counted before its grid
    # After a grid, training carries on from the step it had reached.
    assert (resumed.start, resumed.total) == (2, 4)
    assert [done for done, _, _ in resumed.updates] == [3, 4]
    # The final grid starts only once the step count reached its end, and counts its images.
    assert resumed.updates[-1][:2] == (4, 4)
    images = len({i.diagnosis for i in items}) * 6
    for grid in (mid_grid, last_grid):
        assert (grid.start, grid.total) == (0, images)
        assert grid.updates and grid.updates[-1][:2] == (images, images)
    assert (saving.start, saving.total) == (4, 4)
    step_messages = [m for _, _, m in first.updates + resumed.updates]
    assert step_messages[-1].startswith("step 4/4 · loss ")
    assert progress.messages and not any("ETA" in m for m in progress.messages)


def test_clipping_bounds_the_gradient_norm_and_sees_every_parameter(tiny):
    from diffusers import UNet2DConditionModel

    from fairskin.diffusion.training_setup import lora_config

    unet = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet")
    unet.add_adapter(lora_config(TrainConfig.build("lora")))
    out = unet(torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 77, 32)).sample
    (out.square().sum() * 1e3).backward()
    params = (p for p in unet.parameters() if p.requires_grad)  # a generator, on purpose
    before, after = clip_gradients(params, 0.01)
    assert before > 0.01
    assert after == pytest.approx(0.01, rel=1e-3)
    norms = torch.stack([p.grad.norm() for p in unet.parameters() if p.grad is not None])
    assert norms.norm().item() == pytest.approx(0.01, rel=1e-3)


def test_loss_log_records_the_gradient_norm_before_clipping(ti_run):
    with (ti_run.run_dir / "loss.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["grad_norm"]) > 0 for r in rows)
    manifest = (ti_run.run_dir / "manifest.json").read_text()
    assert '"diffusers": "0.42.1"' in manifest and '"kind": "textual_inversion"' in manifest


def test_bf16_autocast_with_checkpointing_and_cached_latents_keeps_fp32_trainables(
    tiny, items, ti_run, tmp_path
):
    config = TrainConfig.build(
        "lora",
        {
            "steps": 2,
            "mixed_precision": "bf16",
            "gradient_checkpointing": True,
            "cache_latents": True,
            **FAST,
        },
    )
    progress = RecordingProgress()
    result = train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path,
        parents=[ti_run.run_dir],
        progress=progress,
    )
    [caching] = progress.named(PHASE_LATENTS)
    assert caching.total == len(items) and caching.last_done == len(items)
    assert [p.name for p in progress.recorded][:3] == [PHASE_LOADING, PHASE_LATENTS, PHASE_TRAINING]
    lora_params = [p for n, p in result.unet.named_parameters() if "lora_" in n]
    assert lora_params and all(p.dtype == torch.float32 for p in lora_params)
    assert result.unet.is_gradient_checkpointing
    assert all(math.isfinite(v) for _, v in result.loss_history)
