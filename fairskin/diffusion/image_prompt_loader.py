"""Loading an image-prompt adapter into a pipeline for generation: the same path for a public
IP-Adapter (for example h94/IP-Adapter's ``models/ip-adapter_sd15.safetensors`` with its
``models/image_encoder``) and for one a FairSkin run trained (its run folder).

Everything is checked before the pipeline changes: the file must be the basic IP-Adapter layout
for this UNet's cross-attention layers and width, and read the image encoder's embedding width.
Then ``pipe.load_ip_adapter`` loads it (4 tokens, the public count), or, for another token count,
which diffusers' loader cannot rebuild from this layout, the same diffusers classes are attached
here (`image_prompt.attach`) and filled. Generate with ``pipe(..., ip_adapter_image=image)``
or ``ip_adapter_image_embeds=reference_embeds(pipe, image, ...)``: one reference per call,
which the pipeline repeats over the batch. Once loaded, every UNet call needs image
embeddings: for prompts without a reference, call inside ``image_prompt.detached(pipe.unet)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fairskin.diffusion.base_models import IMAGE_ENCODER_DIR
from fairskin.diffusion.image_prompt import (
    FILENAME,
    FORMAT_NAME,
    PUBLIC_TOKENS,
    ImagePromptError,
    LoadedImagePrompt,
    attach,
    check_state,
    cross_attention_layers,
    cross_attention_width,
    image_processor,
    load_state,
    projection_dim,
    read_adapter_file,
)


def load_image_prompt(
    pipe: Any,
    folder: Path | str,
    *,
    weight_name: str = FILENAME,
    image_encoder_folder: str = IMAGE_ENCODER_DIR,
    scale: float = 1.0,
) -> LoadedImagePrompt:
    """Load ``folder/weight_name`` (and ``folder/image_encoder_folder`` unless the pipeline
    has an image encoder) into ``pipe``; an adapter loaded before is replaced. Refused with
    `ImagePromptError` (a ValueError) for a file that is not the basic IP-Adapter layout, or
    whose cross-attention width, layers or CLIP embedding width do not match."""
    folder = Path(folder)
    path = folder / weight_name
    if not weight_name.endswith(".safetensors"):
        raise ImagePromptError(f"{weight_name}: only .safetensors adapter files are loaded")
    state, meta = read_adapter_file(path)
    encoder = getattr(pipe, "image_encoder", None)
    encoder_dir = folder / image_encoder_folder
    if encoder is not None:
        embed_dim = int(encoder.config.projection_dim)
    elif (encoder_dir / "config.json").is_file():
        embed_dim = projection_dim(encoder_dir)
    else:
        raise ImagePromptError(
            f"no image encoder for {path.name}: the pipeline has none and {encoder_dir} is "
            "not a CLIPVisionModelWithProjection folder"
        )
    tokens, embed_dim = check_state(state, pipe.unet, embed_dim, name=str(path))
    if getattr(pipe.unet, "encoder_hid_proj", None) is not None:
        pipe.unload_ip_adapter()
        if encoder is not None:  # unload_ip_adapter drops the encoder; keep the one we checked
            pipe.register_modules(image_encoder=encoder)
    if tokens == PUBLIC_TOKENS:
        pipe.load_ip_adapter(
            str(folder),
            subfolder="",
            weight_name=weight_name,
            image_encoder_folder=image_encoder_folder,
        )
        loader = "diffusers load_ip_adapter"
    else:
        _attach_other_count(pipe, encoder_dir, state, tokens, embed_dim, name=str(path))
        loader = "fairskin"
    pipe.set_ip_adapter_scale(scale)
    return LoadedImagePrompt(
        path=path,
        tokens=tokens,
        image_embed_dim=embed_dim,
        cross_attention_dim=cross_attention_width(pipe.unet),
        layers=len(cross_attention_layers(pipe.unet)),
        scale=scale,
        trained_by_fairskin=meta.get("fairskin_format") == FORMAT_NAME,
        loader=loader,
    )


def _attach_other_count(
    pipe: Any, encoder_dir: Path, state: dict[str, Any], tokens: int, embed_dim: int, *, name: str
) -> None:
    from transformers import CLIPVisionModelWithProjection

    if getattr(pipe, "image_encoder", None) is None:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_dir))
        pipe.register_modules(image_encoder=encoder.to(pipe.device, pipe.dtype))
    if getattr(pipe, "feature_extractor", None) is None:
        size = int(pipe.image_encoder.config.image_size)
        pipe.register_modules(feature_extractor=image_processor(size))
    params = attach(pipe.unet, image_embed_dim=embed_dim, tokens=tokens)
    load_state(pipe.unet, state, name=name)
    for p in params:  # for generation, as diffusers' loader leaves them
        p.requires_grad_(False)


def reference_embeds(pipe: Any, image: Any, *, guidance: bool) -> list[torch.Tensor]:
    """``ip_adapter_image_embeds`` for one reference image, embedded once (as
    ``pipe.encode_image`` does) so that several calls, or a record of what conditioned a
    batch, can reuse it: ``[(1, 1, dim)]``, or with ``guidance`` (a guidance scale above 1)
    ``[(2, 1, dim)]``, the zero "no image" embedding first. The pipeline repeats it over the
    call's batch: one reference per call (it cannot give each prompt its own reference)."""
    if getattr(pipe, "image_encoder", None) is None:
        raise ImagePromptError("load an image prompt (load_image_prompt) first")
    embeds = pipe.encode_image(image, pipe.device, 1)[0][:, None, :]
    if guidance:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])
    return [embeds]
