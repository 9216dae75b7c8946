"""Batched image generation with a fine-tuned model, loaded once per worker.

Each candidate has its own torch.Generator seeded with its plan seed, so the noise it starts
from depends on its seed alone. Its pixels also depend, in the last float bits, on how many rows
one call computes and on the machine: callers pass fixed micro-batches
(fairskin.generation.groups) and record :meth:`BatchGenerator.environment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from fairskin.diffusion.artifacts import load_run_artifacts
from fairskin.diffusion.base_models import BaseModel
from fairskin.diffusion.label_guidance import sample_with_labels
from fairskin.diffusion.labels_conditioning import (
    LabelEmbedding,
    LabelError,
    labels_attached,
    lineage_label_file,
    load_labels,
    time_embedding_width,
)
from fairskin.generation.groups import pixel_environment
from fairskin.generation.options import SCHEDULERS
from fairskin.generation.reference_images import check_strength
from fairskin.generation.spec import DEFAULT_NEGATIVE_PROMPT, SPEC

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "SCHEDULERS", "BatchGenerator", "ImagePrompt"]


@dataclass(frozen=True)
class ImagePrompt:
    """One reference image as an image prompt: the adapter folder (a run's, or a public
    IP-Adapter's with its ``image_encoder/``), its scale, and the image, (3, H, W) in [0, 1]."""

    folder: Path
    scale: float
    image: torch.Tensor
    weight_name: str = "ip_adapter.safetensors"


class BatchGenerator:
    def __init__(
        self,
        base: BaseModel,
        run_dirs: Sequence[Path],
        *,
        scheduler: str = "ddim",
        device: str | None = None,
        dtype: torch.dtype | None = None,
        optimized: bool = False,
        compile_unet: bool | None = None,
        compile_mode: str = "default",
    ) -> None:
        """``optimized`` loads the optimized path (`fairskin.generation.optimize`: LoRA and QKV
        fused, channels-last, SDPA, the device's compute dtype, the UNet compiled on CUDA in
        ``compile_mode`` unless ``compile_unet`` is False). Off by default: its pixels differ
        from the eager path's in float rounding, and a batch's pixels must not change with the
        worker."""
        import diffusers
        from diffusers import StableDiffusionPipeline

        if scheduler not in SCHEDULERS:
            raise ValueError(
                f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if optimized and dtype is None:
            from fairskin.generation.optimize import compute_dtype

            dtype = compute_dtype(self.device)
        dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        pipe = StableDiffusionPipeline.from_pretrained(
            base.path,
            dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        self.tokens = load_run_artifacts(pipe, [Path(d) for d in run_dirs])
        # The label table trained with the loaded LoRA, kept aside: it is lent to the UNet only
        # for label-guided sampling, so the plain pipeline below never meets class labels.
        label_file = lineage_label_file([Path(d) for d in run_dirs])
        self.labels: LabelEmbedding | None = load_labels(label_file) if label_file else None
        if self.labels is not None and self.labels.width != time_embedding_width(pipe.unet):
            raise LabelError(
                f"{label_file}: label vectors are {self.labels.width} wide but this UNet's "
                f"time embedding is {time_embedding_width(pipe.unet)}"
            )
        scheduler_class = getattr(diffusers, SCHEDULERS[scheduler])
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.optimizations: dict[str, Any] | None = None
        if optimized:
            from fairskin.generation.optimize import optimize_pipeline

            self.optimizations = optimize_pipeline(
                self.pipe, compile_unet=compile_unet, compile_mode=compile_mode
            )
        self.scheduler = scheduler
        self._img2img: Any = None  # built from the same components on first use, never loaded
        self._image_prompt: Path | None = None  # the adapter folder loaded, on first use

    def environment(self) -> dict[str, object]:
        """The device, dtype, library versions and threads this generator's pixels depend on."""
        environment = pixel_environment(self.device, self.pipe.unet.dtype)
        if self.optimizations is not None:
            environment["optimized"] = self.optimizations
        return environment

    @property
    def native_size(self) -> int:
        return cast("int", self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        steps: int = SPEC.steps.default,
        guidance: float = SPEC.guidance.default,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        size: int | None = None,
        init_images: torch.Tensor | None = None,
        strength: float = 1.0,
        labels: Sequence[tuple[str | None, int | None]] | None = None,
        label_scale: float = 0.0,
        image_prompt: ImagePrompt | None = None,
    ) -> torch.Tensor:
        """Images as a float tensor (N, 3, H, W) in [0, 1] on the device, before any encoding:
        scoring runs on these, PNG encoding comes after.

        With ``init_images`` ((N, 3, size, size) floats in [0, 1]: one reference per prompt),
        each image is generated img2img from its reference: noised to ``strength`` of the
        schedule (`check_strength`) and denoised from there, with the same seeds.

        ``label_scale`` above 0 guides each image towards its (diagnosis, skin type) in
        ``labels`` as well (`label_guidance`: a third UNet pass per step), with the model's
        label table; at 0 labels are not used and the output is the plain pipeline's.

        ``image_prompt`` conditions every image of the call on one reference image through an
        IP-Adapter (`fairskin.diffusion.image_prompt_loader`), text-to-image from noise. Once
        an adapter is loaded, calls without one run with it detached: the plain pipeline."""
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError("give one seed per prompt")
        size = size or self.native_size
        generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        if image_prompt is not None:
            if self.optimizations is not None:
                raise ValueError("image prompts run on the eager path: load without optimized")
            if init_images is not None or label_scale:
                raise ValueError("an image prompt takes no img2img references or label guidance")
            return self._from_image_prompt(
                prompts, generators, image_prompt, steps=steps, guidance=guidance,
                negative_prompt=negative_prompt, size=size,
            )  # fmt: skip
        with self._without_image_prompt():
            return self._generate(
                prompts, generators, steps=steps, guidance=guidance,
                negative_prompt=negative_prompt, size=size, init_images=init_images,
                strength=strength, labels=labels, label_scale=label_scale,
            )  # fmt: skip

    def _without_image_prompt(self) -> AbstractContextManager[None]:
        from fairskin.diffusion.image_prompt import detached

        return detached(self.pipe.unet)

    def _from_image_prompt(
        self,
        prompts: Sequence[str],
        generators: list[torch.Generator],
        prompt: ImagePrompt,
        *,
        steps: int,
        guidance: float,
        negative_prompt: str,
        size: int,
    ) -> torch.Tensor:
        from PIL import Image

        from fairskin.diffusion.image_prompt_loader import load_image_prompt, reference_embeds

        if self._image_prompt != prompt.folder / prompt.weight_name:
            load_image_prompt(
                self.pipe, prompt.folder, weight_name=prompt.weight_name, scale=prompt.scale
            )
            self._image_prompt = prompt.folder / prompt.weight_name
        self.pipe.set_ip_adapter_scale(prompt.scale)
        pixels = prompt.image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        image = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())
        embeds = reference_embeds(self.pipe, image, guidance=guidance > 1)
        return self._text_to_image(
            prompts, generators, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
            size=size,
            ip_adapter_image_embeds=[e.to(self.device, self.pipe.unet.dtype) for e in embeds],
        )  # fmt: skip

    def _text_to_image(
        self,
        prompts: Sequence[str],
        generators: list[torch.Generator],
        *,
        steps: int,
        guidance: float,
        negative_prompt: str,
        size: int,
        **extra: Any,
    ) -> torch.Tensor:
        """One call of the text-to-image pipeline (``extra``: an image prompt's embeddings)."""
        out = self.pipe(
            prompt=list(prompts),
            negative_prompt=[negative_prompt] * len(prompts),
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            output_type="pt",
            **extra,
        )
        return cast("torch.Tensor", out.images.float().clamp(0, 1))

    def _generate(
        self,
        prompts: Sequence[str],
        generators: list[torch.Generator],
        *,
        steps: int,
        guidance: float,
        negative_prompt: str,
        size: int,
        init_images: torch.Tensor | None,
        strength: float,
        labels: Sequence[tuple[str | None, int | None]] | None,
        label_scale: float,
    ) -> torch.Tensor:
        if label_scale:
            if self.labels is None:
                raise ValueError("this model was not trained with label conditioning")
            if init_images is not None or labels is None:
                raise ValueError("label guidance needs labels and no reference images")
            with labels_attached(self.pipe.unet, self.labels):
                images = sample_with_labels(
                    self.pipe,
                    prompts,
                    labels,
                    text_scale=guidance,
                    label_scale=label_scale,
                    steps=steps,
                    generators=generators,
                    negative_prompt=negative_prompt,
                    size=size,
                )
            return images.to(self.device)
        if init_images is not None:
            return self._from_references(
                prompts,
                generators,
                init_images,
                strength=strength,
                steps=steps,
                guidance=guidance,
                negative_prompt=negative_prompt,
                size=size,
            )
        return self._text_to_image(
            prompts, generators, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
            size=size,
        )  # fmt: skip

    def _from_references(
        self,
        prompts: Sequence[str],
        generators: list[torch.Generator],
        init_images: torch.Tensor,
        *,
        strength: float,
        steps: int,
        guidance: float,
        negative_prompt: str,
        size: int,
    ) -> torch.Tensor:
        from diffusers import StableDiffusionImg2ImgPipeline

        problem = check_strength(strength, steps)
        if problem:
            raise ValueError(problem)
        expected = (len(prompts), 3, size, size)
        if tuple(init_images.shape) != expected or not init_images.is_floating_point():
            raise ValueError(
                f"reference images must be floats of shape {expected}, got "
                f"{init_images.dtype} {tuple(init_images.shape)}"
            )
        if self._img2img is None:
            self._img2img = StableDiffusionImg2ImgPipeline(**self.pipe.components)
            self._img2img.set_progress_bar_config(disable=True)
        out = self._img2img(
            prompt=list(prompts),
            image=init_images.to(self.device, self.pipe.unet.dtype).clamp(0, 1),
            strength=strength,
            negative_prompt=[negative_prompt] * len(prompts),
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
        )
        return cast("torch.Tensor", out.images.float().clamp(0, 1))
