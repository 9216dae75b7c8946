"""Does generation follow the requested skin-type label? Two short LoRA runs on the tiny model,
with and without labels, on drawn images of skin types I and VI; generated latents are projected
on the direction from the mean type-I training latent to the mean type-VI one
(`label_steering`). docs/validation/label-conditioning.md has the figures and why the tiny
model is tuned (its VAE scaling calibrated to unit latent spread, v-prediction)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.label_guidance import sample_with_labels
from fairskin.diffusion.label_steering import (
    gap_along,
    steering_gap,
    trained_pipeline,
    tuned_model,
    type_direction,
)
from fairskin.diffusion.tokens import prompt_for
from fairskin.diffusion.training import TrainItem, train
from fairskin.diffusion.training_setup import load_images
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import SilentProgress

torch.set_num_threads(1)
DIAGNOSES = ("MEL", "NV")
STEPS = 100
SAMPLING = {"seeds": 4, "steps": 8}  # 4 seeds x 2 diagnoses, 8 DDIM steps
FAST = {
    "validation_every": 10_000,
    "validation_inference_steps": 1,
    "lr_warmup_steps": 0,
    "grad_accumulation": 1,
    "batch_size": 4,
    "diversity_weight": 0.0,
    "cache_latents": True,
}
LABEL_LR = 1e-2  # the label tables' rate (the LoRA's: 5e-3); see the doc for 1e-3
NO_TYPE = "A dermoscopic image of {diagnosis}, high quality medical photograph"


def test_the_gap_is_the_high_type_minus_the_low_type_seed_by_seed():
    # Two types' latents along the first axis: the direction is that axis, unit length.
    latents = torch.zeros(4, 2, 1, 1)
    latents[:, 0, 0, 0] = torch.tensor([1.0, 3.0, 7.0, 9.0])
    direction = type_direction(latents, [1, 1, 6, 6], low=1, high=6)
    assert direction.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="both skin types 1 and 6"):
        type_direction(latents, [1, 1, 2, 2], low=1, high=6)
    # asked_latents' layout: (diagnoses, low/high, seeds, ...); 1 diagnosis, 3 seeds.
    asked = torch.zeros(1, 2, 3, 2, 1, 1)
    asked[0, 0, :, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    asked[0, 1, :, 0, 0, 0] = torch.tensor([2.0, 4.0, 3.0])
    asked[0, 1, :, 1, 0, 0] = 100.0  # across the direction: no part of the gap
    gap = gap_along(asked, direction)
    assert gap.per_seed == (1.0, 2.0, 0.0)
    assert gap.mean == 1.0 and gap.spread == 1.0


def test_undecoded_samples_are_the_latents_the_images_decode_from(tmp_path):
    tiny = resolve_base_model("tiny", cache_dir=tmp_path)
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny.path, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    kwargs = {"text_scale": 2.0, "steps": 3, "seed": 5}
    images = sample_with_labels(pipe, ["a", "b"], None, **kwargs)
    latents = sample_with_labels(pipe, ["a", "b"], None, decode=False, **kwargs)
    assert latents.shape == (2, 4, 16, 16)
    with torch.no_grad():
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    assert torch.allclose((decoded / 2 + 0.5).clamp(0, 1), images, atol=1e-6)


@pytest.fixture(scope="module")
def gaps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("steering")
    tiny = resolve_base_model("tiny", cache_dir=folder / "models")
    items = []
    for dx in DIAGNOSES:
        for fst in (1, 6):
            for k in range(3):
                path = folder / f"{dx}-{fst}-{k}.png"
                draw_lesion(dx, fst, seed=k, size=64).save(path)
                items.append(TrainItem(str(path), dx, fst))
    vae = AutoencoderKL.from_pretrained(tiny.path, subfolder="vae")
    pixels = load_images(items, list(range(len(items))), tiny.native_size())
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mean
    scaling = float(1.0 / raw.std())
    tuned = tuned_model(
        Path(tiny.path), folder / "tuned", scaling_factor=scaling, prediction_type="v_prediction"
    )
    base = resolve_base_model(str(tuned), cache_dir=folder / "models")
    direction = type_direction(raw * scaling, [i.fst for i in items], low=1, high=6)

    ti = train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, **FAST}),
        base=base,
        items=items,
        run_dir=folder / "ti",
        progress=SilentProgress(),
    )
    runs = {}
    for name, extra in (
        ("without", {}),
        ("with", {"label_conditioning": True, "label_learning_rate": LABEL_LR}),
    ):
        config = TrainConfig.build("lora", {"steps": STEPS, "learning_rate": 5e-3, **extra, **FAST})
        runs[name] = train(
            config=config,
            base=base,
            items=items,
            run_dir=folder / name,
            parents=[ti.run_dir],
            progress=SilentProgress(),
        )
    off, on = (
        trained_pipeline(base.path, runs["without"]),
        trained_pipeline(base.path, runs["with"]),
    )

    def named(tokens):  # the training prompt: it names the skin type
        return lambda dx, fst: prompt_for(dx, fst, available=tokens)

    def unnamed(tokens):  # the same prompt without the skin type: only the label can ask
        return lambda dx, fst: prompt_for(dx, fst, available=tokens, template=NO_TYPE)

    return {
        "without labels": steering_gap(
            off, direction, diagnoses=DIAGNOSES, prompt=named(runs["without"].tokens),
            labelled=False, label_scale=0, **SAMPLING,
        ),
        **{
            f"label scale {scale:g}": steering_gap(
                on, direction, diagnoses=DIAGNOSES, prompt=named(runs["with"].tokens),
                labelled=True, label_scale=scale, **SAMPLING,
            )
            for scale in (0, 1, 3)
        },
        **{
            f"no type in text, label scale {scale:g}": steering_gap(
                on, direction, diagnoses=DIAGNOSES, prompt=unnamed(runs["with"].tokens),
                labelled=True, label_scale=scale, **SAMPLING,
            )
            for scale in (0, 1)
        },
    }  # fmt: skip


def _margin(*gaps) -> float:
    """Three seed spreads of the difference of independent gaps."""
    return 3 * math.sqrt(sum(g.spread**2 for g in gaps))


# The two tests below share about 27 s on one CPU thread (two 100-step LoRA runs, then
# sampling), so they are marked slow.
@pytest.mark.slow
def test_generation_follows_the_requested_skin_type_better_with_labels(gaps):
    without, labelled = gaps["without labels"], gaps["label scale 1"]
    # Asking for type VI instead of I moves the latent towards the type-VI training latents,
    # by more than the run without labels moves it (text only) and by more than seed noise.
    assert labelled.mean - without.mean > _margin(without, labelled), gaps
    assert min(labelled.per_seed) > max(without.per_seed), gaps
    # A larger label scale pushes harder.
    stronger = gaps["label scale 3"]
    assert stronger.mean - labelled.mean > _margin(labelled, stronger), gaps
    # With the skin type left out of the text, the label alone steers.
    alone = gaps["no type in text, label scale 1"]
    assert alone.mean > _margin(alone) and min(alone.per_seed) > 0, gaps


@pytest.mark.slow
def test_the_null_label_gives_no_steering(gaps):
    # Label scale 0 guides with the null label only: which type is asked makes no difference
    # to the latents (to the last bit) when the text does not name it ...
    assert gaps["no type in text, label scale 0"].per_seed == (0.0,) * 8
    # ... and when the text names it, what is left is the text's doing: a small fraction of
    # what the label adds at scale 1.
    null, labelled = gaps["label scale 0"], gaps["label scale 1"]
    assert abs(null.mean) < labelled.mean / 4, gaps
