"""Image-prompt adapter (IP-Adapter style): generation steered by a reference image.

A frozen CLIP image encoder (``CLIPVisionModelWithProjection``, the base model's
``image_encoder/``) turns an image into one embedding; an ``ImageProjection`` maps it to
``tokens`` extra conditioning tokens; every cross-attention layer of the UNet attends to them
through its own key and value projections (``to_k_ip`` / ``to_v_ip``) beside the text's, and
adds the result times a scale. These are diffusers' own classes (``ImageProjection``,
``MultiIPAdapterImageProjection``, ``IPAdapterAttnProcessor2_0``), wired the way
``pipe.load_ip_adapter`` wires them, so a trained adapter is saved in the public IP-Adapter
layout (`FILENAME`: ``image_proj.proj.*``, ``image_proj.norm.*``,
``ip_adapter.<id>.to_k_ip.weight`` / ``to_v_ip.weight`` with id 1, 3, 5, ... per
cross-attention layer in the UNet's processor order) next to a copy of the image encoder, and
plain diffusers loads a run folder with
``pipe.load_ip_adapter(run_dir, subfolder="", weight_name="ip_adapter.safetensors")``.

``to_k_ip`` and ``to_v_ip`` start at zero, so an attached adapter adds exactly nothing until it
has trained: step 0 is the base model. Training drops a sample's image embedding to zeros at a
rate, which is the "no image" embedding the diffusers pipeline uses for classifier-free guidance.

diffusers' loader builds 4 tokens for this layout whatever the file holds; `load_image_prompt`
builds other counts itself with the same classes (``PUBLIC_TOKENS``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairskin.diffusion.base_models import IMAGE_ENCODER_DIR, BaseModel

FILENAME = "ip_adapter.safetensors"
PUBLIC_TOKENS = 4  # the token count diffusers' load_ip_adapter builds for this layout
MAX_TOKENS = 16
EMBED_BATCH = 16  # images per image-encoder call
FORMAT_NAME = "fairskin-image-prompt"
# The public file's image_proj keys and the ImageProjection parameters they fill.
PROJECTION_KEYS = {
    "proj.weight": "image_embeds.weight",
    "proj.bias": "image_embeds.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
# image_proj keys of IP-Adapter variants this module does not build (Plus, Full, FaceID).
VARIANT_KEYS = ("latents", "proj.3.weight", "perceiver_resampler.proj_in.weight", "proj.2.weight")


class ImagePromptError(ValueError):
    """An image-prompt adapter, adapter file or image encoder that cannot be used."""


@dataclass(frozen=True)
class CrossAttentionLayer:
    processor: str  # the name in ``unet.attn_processors``
    hidden_size: int  # the layer's width (what to_k_ip / to_v_ip project to)
    key_id: int  # its number in the public file's ``ip_adapter.<id>.`` keys


@dataclass(frozen=True)
class LoadedImagePrompt:
    """What `load_image_prompt` put into a pipeline."""

    path: Path
    tokens: int
    image_embed_dim: int
    cross_attention_dim: int
    layers: int
    scale: float
    trained_by_fairskin: bool  # the file's metadata says a FairSkin run wrote it
    loader: str  # "diffusers load_ip_adapter", or "fairskin" for token counts other than 4


def cross_attention_layers(unet: Any) -> list[CrossAttentionLayer]:
    """The UNet's cross-attention layers as diffusers' IP-Adapter loader numbers them: in the
    order of ``unet.attn_processors``, every layer but the self-attention (``attn1``) ones,
    key ids 1, 3, 5, ... (the original numbering counted the attn1 layers in between)."""
    blocks = list(unet.config.block_out_channels)
    layers, key_id = [], 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks."):
            hidden = list(reversed(blocks))[int(name.split(".")[1])]
        elif name.startswith("down_blocks."):
            hidden = blocks[int(name.split(".")[1])]
        else:
            raise ImagePromptError(
                f"attention layer {name} is in no block of a Stable Diffusion UNet"
            )
        layers.append(CrossAttentionLayer(name, int(hidden), key_id))
        key_id += 2
    return layers


def cross_attention_width(unet: Any) -> int:
    width = unet.config.cross_attention_dim
    if not isinstance(width, int):
        raise ImagePromptError(f"this UNet's cross_attention_dim {width!r} is not one number")
    return width


def attached(unet: Any) -> Any | None:
    """The attached ``ImageProjection`` (one adapter), or None."""
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    hid = getattr(unet, "encoder_hid_proj", None)
    if (
        isinstance(hid, MultiIPAdapterImageProjection)
        and unet.config.encoder_hid_dim_type == "ip_image_proj"
        and len(hid.image_projection_layers) == 1
        and isinstance(hid.image_projection_layers[0], ImageProjection)
    ):
        return hid.image_projection_layers[0]
    return None


def attach(unet: Any, *, image_embed_dim: int, tokens: int) -> list[torch.nn.Parameter]:
    """Give ``unet`` an adapter reading ``image_embed_dim``-wide image embeddings as ``tokens``
    tokens: the projection freshly initialised (torch's default, from the global generator),
    ``to_k_ip`` / ``to_v_ip`` zero. Returns its parameters (projection first)."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    if not 1 <= tokens <= MAX_TOKENS:
        raise ImagePromptError(f"image prompt tokens must be 1 to {MAX_TOKENS}, got {tokens}")
    if getattr(unet, "encoder_hid_proj", None) is not None:
        raise ImagePromptError("this UNet already projects its encoder states (an adapter?)")
    width = cross_attention_width(unet)
    processors = dict(unet.attn_processors)
    params: list[torch.nn.Parameter] = []
    projection = ImageProjection(
        image_embed_dim=image_embed_dim, cross_attention_dim=width, num_image_text_embeds=tokens
    ).to(unet.device, unet.dtype)
    params += list(projection.parameters())
    for layer in cross_attention_layers(unet):
        processor = IPAdapterAttnProcessor2_0(
            hidden_size=layer.hidden_size,
            cross_attention_dim=width,
            num_tokens=(tokens,),
            scale=1.0,
        ).to(unet.device, unet.dtype)
        with torch.no_grad():
            for linear in (*processor.to_k_ip, *processor.to_v_ip):
                linear.weight.zero_()
        processors[layer.processor] = processor
        params += list(processor.parameters())
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projection])
    unet.config.encoder_hid_dim_type = "ip_image_proj"  # as diffusers' own loader sets it
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state(unet: Any) -> dict[str, torch.Tensor]:
    """The attached adapter's tensors under the public IP-Adapter keys (not copies)."""
    projection = attached(unet)
    if projection is None:
        raise ImagePromptError("this UNet has no image-prompt adapter attached")
    own = dict(projection.named_parameters())
    state = {f"image_proj.{key}": own[name] for key, name in PROJECTION_KEYS.items()}
    processors = unet.attn_processors
    for layer in cross_attention_layers(unet):
        processor = processors[layer.processor]
        state[f"ip_adapter.{layer.key_id}.to_k_ip.weight"] = processor.to_k_ip[0].weight
        state[f"ip_adapter.{layer.key_id}.to_v_ip.weight"] = processor.to_v_ip[0].weight
    return state


def check_state(
    state: dict[str, torch.Tensor], unet: Any, image_embed_dim: int | None, *, name: str
) -> tuple[int, int]:
    """Refuse (ImagePromptError, naming ``name``) a state that is not the basic IP-Adapter
    layout for this UNet and image encoder; returns (tokens, image embedding width)."""
    width = cross_attention_width(unet)
    if not state or any(not k.startswith(("image_proj.", "ip_adapter.")) for k in state):
        raise ImagePromptError(
            f"{name} is not in the IP-Adapter format (keys image_proj.* and ip_adapter.*)"
        )
    proj = {k.removeprefix("image_proj."): v for k, v in state.items() if k.startswith("image_")}
    if set(proj) != set(PROJECTION_KEYS):
        variant = any(k in proj for k in VARIANT_KEYS)
        raise ImagePromptError(
            f"{name}: "
            + (
                "an IP-Adapter Plus/Full/FaceID variant; only the basic layout (ip-adapter_sd15) "
                "is supported here: load variants with pipe.load_ip_adapter directly"
                if variant
                else f"image_proj keys {sorted(proj)} are not {list(PROJECTION_KEYS)}"
            )
        )
    weight = proj["proj.weight"]
    if proj["norm.weight"].shape != (width,) or weight.dim() != 2 or weight.shape[0] % width:
        raise ImagePromptError(
            f"{name} was made for a cross-attention width of {proj['norm.weight'].shape[0]}; "
            f"this UNet's is {width} (an adapter for another base model)"
        )
    tokens, embed_dim = weight.shape[0] // width, int(weight.shape[1])
    if not 1 <= tokens <= MAX_TOKENS:
        raise ImagePromptError(f"{name} has {tokens} image tokens; 1 to {MAX_TOKENS} are supported")
    if image_embed_dim is not None and embed_dim != image_embed_dim:
        raise ImagePromptError(
            f"{name} reads {embed_dim}-wide CLIP image embeddings but the image encoder gives "
            f"{image_embed_dim} (its projection_dim): an adapter for another image encoder"
        )
    expected = {}
    for layer in cross_attention_layers(unet):
        for part in ("to_k_ip", "to_v_ip"):
            expected[f"ip_adapter.{layer.key_id}.{part}.weight"] = (layer.hidden_size, width)
    found = {k: tuple(v.shape) for k, v in state.items() if k.startswith("ip_adapter.")}
    if found != expected:
        raise ImagePromptError(
            f"{name}: its ip_adapter keys or shapes ({len(found)} tensors) do not match this "
            f"UNet's {len(expected) // 2} cross-attention layers (an adapter for another model)"
        )
    return tokens, embed_dim


def load_state(unet: Any, state: dict[str, torch.Tensor], *, name: str = "the state") -> None:
    """Copy a public-layout state into the attached adapter (same shapes, checked)."""
    own = adapter_state(unet)
    check_state(state, unet, own["image_proj.proj.weight"].shape[1], name=name)
    if own["image_proj.proj.weight"].shape != state["image_proj.proj.weight"].shape:
        raise ImagePromptError(f"{name} has another token count than the attached adapter")
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key])


def metadata(unet: Any) -> dict[str, str]:
    state = adapter_state(unet)
    width = cross_attention_width(unet)
    return {
        "format": "pt",
        "fairskin_format": FORMAT_NAME,
        "tokens": str(state["image_proj.proj.weight"].shape[0] // width),
        "image_embed_dim": str(state["image_proj.proj.weight"].shape[1]),
        "cross_attention_dim": str(width),
        "usage": 'pipe.load_ip_adapter(run_dir, subfolder="", '
        f'weight_name="{FILENAME}", image_encoder_folder="{IMAGE_ENCODER_DIR}")',
    }


def save_adapter(path: Path, unet: Any) -> Path:
    """The attached adapter in the public layout (float32), written whole or not at all."""
    from safetensors.torch import save_file

    tensors = {}
    for key, tensor in adapter_state(unet).items():
        if not torch.isfinite(tensor).all():
            raise ImagePromptError(f"image-prompt weight {key} contains NaN or infinite values")
        tensors[key] = tensor.detach().to("cpu", torch.float32).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    save_file(tensors, str(staging), metadata=metadata(unet))
    staging.replace(path)
    return path


def read_adapter_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ImagePromptError(f"no image-prompt adapter file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ImagePromptError(f"{path} is not a readable safetensors file ({exc})") from exc


# --- the image encoder ----------------------------------------------------------------------


def encoder_folder(base: BaseModel) -> Path:
    """The base model's image encoder folder; refused (`NoImageEncoder`) when it has none."""
    return base.image_encoder_folder()


def projection_dim(folder: Path) -> int:
    """The image embedding width an encoder folder gives (its ``projection_dim``)."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ImagePromptError(f"no readable image encoder config at {folder}/config.json") from exc
    dim = config.get("projection_dim") if isinstance(config, dict) else None
    if not isinstance(dim, int):
        raise ImagePromptError(f"{folder}/config.json has no projection_dim")
    return dim


def image_processor(image_size: int) -> Any:
    """The preprocessing diffusers' load_ip_adapter gives a pipeline without a feature
    extractor: resize the short side and centre-crop to the encoder's size, CLIP's mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size=image_size, crop_size=image_size)


def embed_images(folder: Path, paths: Sequence[str], device: torch.device) -> torch.Tensor:
    """Each image's projected CLIP embedding, (len(paths), projection_dim) float32 on the CPU."""
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder)).to(device).eval()
    processor = image_processor(int(encoder.config.image_size))
    chunks = []
    with torch.no_grad():
        for start in range(0, len(paths), EMBED_BATCH):
            images = []
            for path in paths[start : start + EMBED_BATCH]:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
            pixels = processor(images, return_tensors="pt").pixel_values
            chunks.append(encoder(pixels.to(device)).image_embeds.float().cpu())
    return torch.cat(chunks)


def batch_conditioning(
    embeds: torch.Tensor | None,
    batch: Sequence[int],
    rate: float,
    unet: Any,
    *,
    draws: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The UNet's extra keyword for a training micro-batch: {} without image embeddings, else
    each image's embedding, zeroed with probability ``rate`` (by each sample's uniform draw in
    ``draws`` when given, else torch's global generator), as
    ``added_cond_kwargs={"image_embeds": [(B, 1, dim)]}``."""
    if embeds is None:
        return {}
    chosen = embeds[list(batch)]
    uniform = torch.rand(len(batch)) if draws is None else draws
    keep = (uniform >= rate).to(chosen.dtype)
    chosen = (chosen * keep[:, None]).to(unet.device, unet.dtype)
    return {"added_cond_kwargs": {"image_embeds": [chosen[:, None, :]]}}


@contextmanager
def detached(unet: Any) -> Iterator[None]:
    """The UNet without its adapter for a while (plain attention, no image tokens): what a
    plain ``StableDiffusionPipeline`` without ``ip_adapter_image`` can call."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    hid = unet.encoder_hid_proj
    if attached(unet) is None:
        yield
        return
    processors = dict(unet.attn_processors)
    names = {layer.processor for layer in cross_attention_layers(unet)}
    unet.set_attn_processor(
        {k: (AttnProcessor2_0() if k in names else p) for k, p in processors.items()}
    )
    unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = None, None
    try:
        yield
    finally:
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = hid, "ip_image_proj"


# --- run folders -----------------------------------------------------------------------------


def prepare(unet: Any, *, folder: Path, tokens: int, parent_run: Path | None) -> list[Any]:
    """A training run's adapter, attached and trainable: fresh, or the parent run's (a joint
    run continues its LoRA parent's adapter, when it has one)."""
    params = attach(unet, image_embed_dim=projection_dim(folder), tokens=tokens)
    saved = parent_run / FILENAME if parent_run is not None else None
    if saved is not None and saved.is_file():
        state, _ = read_adapter_file(saved)
        load_state(unet, state, name=str(saved))
    return params


def save_run_adapter(run_dir: Path, unet: Any, encoder: Path | None) -> dict[str, Any] | None:
    """``ip_adapter.safetensors`` and ``image_encoder/`` (hard links where the file system
    allows, else a copy) in the run folder when the UNet has an adapter; what was written."""
    if attached(unet) is None or encoder is None:
        return None
    path = save_adapter(run_dir / FILENAME, unet)
    target = run_dir / IMAGE_ENCODER_DIR
    staging = run_dir / (IMAGE_ENCODER_DIR + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(encoder, staging, copy_function=_link_or_copy)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    info = metadata(unet)
    tokens = int(info["tokens"])
    return {
        "file": path.name,
        "image_encoder": IMAGE_ENCODER_DIR,
        "tokens": tokens,
        "image_embed_dim": int(info["image_embed_dim"]),
        "plain_diffusers_loadable": tokens == PUBLIC_TOKENS,
    }


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
