"""The validation grid a training run renders every ``validation_every`` steps: one image per
diagnosis x skin type at fixed seeds, with the null label and no image prompt, so it shows what
plain diffusers would draw with the run's LoRA and tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fairskin.diffusion import image_prompt, labels_conditioning, reports
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.tokens import prompt_for
from fairskin.progress import Progress

VALIDATION_BATCH = 8  # prompts rendered per pipeline call in the validation grid


def validation_phase(step: int) -> str:
    return f"Rendering the validation grid (step {step})"


def render_validation_grid(
    model: Any,
    items: Sequence[Any],
    tokens: list[str],
    config: TrainConfig,
    *,
    step: int,
    run_dir: Path,
    progress: Progress,
) -> Path:
    """Diagnosis x FST prompts at fixed seeds, one image each, saved as one PNG grid.

    Reported as a phase of its own, counted in images: on a real model it takes minutes."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    diagnoses = sorted({i.diagnosis for i in items})
    cells = [(dx, fst) for dx in diagnoses for fst in range(1, 7)]
    progress.phase(validation_phase(step), total=len(cells))
    was_training = model.unet.training, model.text_encoder.training
    model.unet.eval()
    model.text_encoder.eval()
    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(model.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    images = []
    with (  # the null label, no image prompt
        torch.no_grad(),
        labels_conditioning.labels_detached(model.unet),
        image_prompt.detached(model.unet),
    ):
        for start in range(0, len(cells), VALIDATION_BATCH):
            chunk = cells[start : start + VALIDATION_BATCH]
            generators = [
                torch.Generator(model.device).manual_seed(config.seed + start + k)
                for k in range(len(chunk))
            ]
            out = pipe(
                [prompt_for(dx, fst, available=tokens) for dx, fst in chunk],
                num_inference_steps=config.validation_inference_steps,
                guidance_scale=7.5,
                generator=generators,
                height=model.resolution,
                width=model.resolution,
                output_type="pil",
            )
            images += out.images
            progress.update(len(images), len(cells), "images")
    model.unet.train(was_training[0])
    model.text_encoder.train(was_training[1])
    path = run_dir / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    reports.image_grid(
        images,
        rows=len(diagnoses),
        cols=6,
        row_labels=diagnoses,
        col_labels=["I", "II", "III", "IV", "V", "VI"],
    ).save(path)
    return path
