"""Classifier-free guidance with a label scale of its own beside the text's, and a sampler.

The composition (nested, text first):

    eps = eps(uncond text, null label)
        + text_scale  * (eps(text, null label) - eps(uncond text, null label))
        + label_scale * (eps(text, label)      - eps(text, null label))

Three UNet evaluations per step when both are guided (run as one batch of three), two when
``label_scale`` is 0: then it is exactly plain classifier-free guidance, because the null label
adds a zero vector (`labels_conditioning`). ``label_scale`` 1 with ``text_scale`` 1 is the
conditional prediction eps(text, label) itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fairskin.diffusion.labels_conditioning import (
    LabelError,
    attached_labels,
    label_indices,
    null_labels,
)


def unet_passes(label_scale: float) -> int:
    """UNet evaluations per denoising step: the cost of guiding the labels too."""
    return 3 if label_scale else 2


def guided_noise(
    unet: Any,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    *,
    text: torch.Tensor,
    uncond: torch.Tensor,
    labels: torch.Tensor | None,
    text_scale: float,
    label_scale: float,
) -> torch.Tensor:
    """The guided model output for a batch (see the module docstring for the composition)."""
    n = latents.shape[0]
    has_labels = attached_labels(unet) is not None
    if label_scale and (not has_labels or labels is None):
        raise LabelError("a label guidance scale needs a UNet with labels attached and labels")
    kwargs: dict[str, Any] = {}
    if label_scale:
        assert labels is not None
        null = null_labels(n, latents.device)
        sample = torch.cat([latents] * 3)
        hidden = torch.cat([uncond, text, text])
        kwargs["class_labels"] = torch.cat([null, null, labels.to(latents.device)])
    else:
        sample = torch.cat([latents] * 2)
        hidden = torch.cat([uncond, text])
        if has_labels:
            kwargs["class_labels"] = null_labels(2 * n, latents.device)
    out: torch.Tensor = unet(sample, timestep, hidden, **kwargs).sample
    eps_uncond, eps_text = out[:n], out[n : 2 * n]
    eps = eps_uncond + text_scale * (eps_text - eps_uncond)
    if label_scale:
        eps = eps + label_scale * (out[2 * n :] - eps_text)
    return eps


def _encode(pipe: Any, prompts: Sequence[str]) -> torch.Tensor:
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(pipe.unet.device)
    hidden: torch.Tensor = pipe.text_encoder(ids)[0]
    return hidden.to(pipe.unet.dtype)


def _step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
    """What the pipeline passes a scheduler's step: the candidates' generators to a stochastic
    scheduler (DDPM draws its step noise from them), eta 0 to DDIM."""
    import inspect

    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = generators
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs


@torch.no_grad()
def sample_with_labels(
    pipe: Any,
    prompts: Sequence[str],
    labels: Sequence[tuple[str | None, int | None]] | None,
    *,
    text_scale: float = 7.5,
    label_scale: float = 0.0,
    steps: int = 20,
    seed: int = 0,
    generators: Sequence[torch.Generator] | None = None,
    negative_prompt: str = "",
    size: int | None = None,
    decode: bool = True,
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] from a pipeline's parts with the nested guidance above.

    ``pipe`` is any object with ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and
    ``scheduler`` (a diffusers StableDiffusionPipeline); the scheduler is used as given. Sample
    ``k`` starts from noise drawn with ``generators[k]`` when given (as the pipeline draws it:
    then label scale 0 reproduces ``pipe(..., generator=generators)``), else from a CPU
    generator seeded ``seed + k``: reproducible either way, and an image does not depend on
    what else is in the batch. ``negative_prompt`` is the unconditional text. ``decode=False``
    returns the final latents (B, C, h, w), scaled as the UNet sees them, instead of images."""
    if labels is not None and len(labels) != len(prompts):
        raise LabelError(f"{len(prompts)} prompts but {len(labels)} labels")
    if generators is not None and len(generators) != len(prompts):
        raise LabelError(f"{len(prompts)} prompts but {len(generators)} generators")
    if steps < 1:
        raise LabelError("steps must be a positive whole number")
    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    device = unet.device
    indices = label_indices(labels, device) if labels is not None else None
    text = _encode(pipe, prompts)
    uncond = _encode(pipe, [negative_prompt] * len(prompts))
    size = size or int(unet.config.sample_size) * pipe.vae_scale_factor
    side = size // pipe.vae_scale_factor
    shape = (1, unet.config.in_channels, side, side)
    if generators is None:
        generators = [torch.Generator("cpu").manual_seed(seed + k) for k in range(len(prompts))]
    latents = torch.cat(
        [
            torch.randn(shape, generator=g, device=g.device, dtype=unet.dtype).to(device)
            for g in generators
        ]
    )
    scheduler.set_timesteps(steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    step_kwargs = _step_kwargs(scheduler, list(generators))
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = guided_noise(
            unet,
            model_input,
            t,
            text=text,
            uncond=uncond,
            labels=indices,
            text_scale=text_scale,
            label_scale=label_scale,
        )
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
    if not decode:
        final: torch.Tensor = latents.float().cpu()
        return final
    images: torch.Tensor = vae.decode(latents / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1).cpu()
