"""Does generation follow the requested skin-type label? A measurement in latent space.

docs/validation/label-conditioning.md. The direction ``d`` is the mean VAE latent (scaled, as
the UNet sees it) of the training images of one skin type minus that of another (type VI minus
type I). A generated latent's projection on ``d`` says how far along it lies, with no decoder in
between (the tiny model's random VAE decodes every latent to much the same colour, so pixel ITA
says little there). The same starting noise is sampled once asking for the low type and once
for the high type; the difference of the two projections, seed by seed, is the steering. Its
mean over seeds is the gap, and the seeds' standard deviation the spread a claim must beat.

`tuned_model` writes a copy of a diffusers model folder with another VAE scaling factor and/or
prediction type (weights unchanged): the tiny model's random VAE gives latents of standard
deviation 0.044 at SD v1.5's 0.18215, where SD v1.5's own VAE gives about 1 (what the factor
was chosen for); 1 / (the raw latents' standard deviation) gives the training images unit spread.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairskin.diffusion.label_guidance import sample_with_labels


@dataclass(frozen=True)
class Gap:
    """Per-seed projection differences (high type asked minus low type asked)."""

    per_seed: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed)

    @property
    def spread(self) -> float:
        """The seeds' standard deviation: how much one sample's steering varies."""
        return statistics.stdev(self.per_seed) if len(self.per_seed) > 1 else 0.0

    @property
    def standard_error(self) -> float:
        return self.spread / math.sqrt(len(self.per_seed))

    def __str__(self) -> str:
        return f"{self.mean:.3f} (spread {self.spread:.3f}, n {len(self.per_seed)})"


def tuned_model(
    source: Path,
    dest: Path,
    *,
    scaling_factor: float | None = None,
    prediction_type: str | None = None,
) -> Path:
    """A copy of the diffusers folder ``source`` at ``dest`` whose VAE scaling factor and/or
    scheduler prediction type are replaced; the weights are the same files."""
    shutil.copytree(source, dest)
    edits = [
        ("vae/config.json", "scaling_factor", scaling_factor),
        ("scheduler/scheduler_config.json", "prediction_type", prediction_type),
    ]
    for relative, key, value in edits:
        if value is None:
            continue
        path = dest / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), key: value}, indent=2))
    return dest


def trained_pipeline(base_path: str, result: Any) -> Any:
    """A DDIM text-to-image pipeline on the base model's folder with a trained run's UNet,
    text encoder and tokenizer (``training.TrainResult``), in eval mode."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        base_path, safety_checker=None, requires_safety_checker=False
    )
    pipe.unet, pipe.text_encoder, pipe.tokenizer = (
        result.unet.eval(),
        result.text_encoder.eval(),
        result.tokenizer,
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def type_direction(latents: torch.Tensor, fsts: Sequence[int], low: int, high: int) -> torch.Tensor:
    """The unit vector (flattened latent) from the mean ``low``-type latent to the mean
    ``high``-type latent."""
    types = torch.tensor(list(fsts))
    if not (types == low).any() or not (types == high).any():
        raise ValueError(f"need latents of both skin types {low} and {high}")
    flat = latents.flatten(1).float()
    d = flat[types == high].mean(0) - flat[types == low].mean(0)
    unit: torch.Tensor = d / d.norm()
    return unit


def asked_latents(
    pipe: Any,
    *,
    diagnoses: Sequence[str],
    prompt: Callable[[str, int], str],
    labelled: bool,
    label_scale: float,
    low: int = 1,
    high: int = 6,
    seeds: int = 8,
    text_scale: float = 1.0,
    steps: int = 10,
) -> torch.Tensor:
    """Generated latents, (diagnoses, 2, seeds, C, h, w): per diagnosis, asking for skin type
    ``low`` then ``high``, seed ``k`` starting from the same noise in both.

    ``prompt(diagnosis, fst)`` is the text (it may or may not name the type); ``labelled``
    asks for the (diagnosis, type) label too, guided at ``label_scale`` (0: the null label)."""
    asked = [(dx, fst, k) for dx in diagnoses for fst in (low, high) for k in range(seeds)]
    latents = sample_with_labels(  # one batch: an image depends on its seed, not its neighbours
        pipe,
        [prompt(dx, fst) for dx, fst, _ in asked],
        [(dx, fst) for dx, fst, _ in asked] if labelled else None,
        text_scale=text_scale,
        label_scale=label_scale,
        steps=steps,
        generators=[torch.Generator("cpu").manual_seed(k) for _, _, k in asked],
        decode=False,
    )
    return latents.view(len(diagnoses), 2, seeds, *latents.shape[1:])


def gap_along(latents: torch.Tensor, direction: torch.Tensor) -> Gap:
    """Per seed and diagnosis, the projection on ``direction`` of the latent asked for the
    high type minus that of the latent asked for the low type (`asked_latents`' layout)."""
    along = latents.flatten(3) @ direction.to(latents.dtype)
    return Gap(tuple((along[:, 1] - along[:, 0]).flatten().tolist()))


def steering_gap(pipe: Any, direction: torch.Tensor, **asked: Any) -> Gap:
    """`gap_along` of `asked_latents` (which takes the keywords)."""
    return gap_along(asked_latents(pipe, **asked), direction)
