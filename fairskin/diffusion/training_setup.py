"""Setting up a fine-tuning run, in the order `train` does it: the base model's components, what
trains (new token embeddings and/or a LoRA on the UNet), the data, and the optimisation.

The order is part of a run's reproducibility: the LoRA's Gaussian initialisation draws from the
global torch generator that `train` seeds just before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from fairskin.diffusion import artifacts, image_prompt
from fairskin.diffusion.base_models import BaseModel, BaseModelError
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.labels_conditioning import LabelEmbedding, prepare_labels
from fairskin.diffusion.lora_targets import unmatched_lora_targets
from fairskin.diffusion.losses import DenoisingObjective, DiversityLoss
from fairskin.diffusion.sampling import BatchSampler
from fairskin.diffusion.tokens import plan_tokens, prompt_for
from fairskin.progress import Progress

if TYPE_CHECKING:
    from fairskin.diffusion.training import TrainItem

LATENT_BATCH = 16  # images per VAE call when caching latents


@dataclass
class Components:
    """The base model's parts, placed on the training device."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler: Any
    device: torch.device
    frozen_dtype: torch.dtype
    resolution: int
    alphas_cumprod: torch.Tensor  # the noise scheduler's, on the device
    objective: DenoisingObjective  # the loss target and weights for what the UNet predicts
    image_encoder: Path | None = None  # the base's image_encoder/, with config.image_prompt


@dataclass
class Trainable:
    """What the run trains: the new tokens' rows of the embedding table and/or the UNet's LoRA."""

    tokens: list[str]
    token_ids: list[int]
    parameters: list[torch.nn.Parameter]
    trains_tokens: bool
    trains_lora: bool
    embedding_table: torch.nn.Parameter
    original_table: torch.Tensor  # the table before training, to hold the old vocabulary still
    new_rows: torch.Tensor  # bool, per row of the table: does it belong to a new token?
    # What trains, counted when training starts: {"lora", "embeddings", "total"}; the
    # embeddings are the new tokens' rows (the rest of the table is held still).
    parameter_counts: dict[str, int]
    labels: LabelEmbedding | None = None  # with config.label_conditioning (labels_conditioning)
    image_prompt: bool = False  # an image-prompt adapter trains (config.image_prompt)


@dataclass
class TrainingData:
    sampler: BatchSampler
    prompts: list[str]  # per item
    cached_latents: torch.Tensor | None = None  # per item, when config.cache_latents
    image_embeds: torch.Tensor | None = None  # per item, CLIP image embeddings (image_prompt)


@dataclass
class Optimisation:
    """The optimiser and what goes with it: the learning-rate schedule, the gradient scaler,
    the diversity loss (which keeps a pool of recent embeddings) and the autocast precision."""

    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    scaler: torch.amp.GradScaler
    diversity: DiversityLoss
    autocast_dtype: torch.dtype | None


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_components(base: BaseModel, config: TrainConfig, device: torch.device) -> Components:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # The loss target, the min-SNR weights and the diversity term's clean-latent estimate all
    # follow what the UNet predicts (`DenoisingObjective`); any other kind is refused here.
    base.trainable_prediction_type()
    # A run with the image prompt is refused here, before any weights load, without an encoder.
    image_encoder = image_prompt.encoder_folder(base) if config.image_prompt else None
    # Frozen weights may live in half precision on a GPU; trainable ones always stay fp32.
    frozen = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        config.mixed_precision, torch.float32
    )
    if device.type == "cpu":
        frozen = torch.float32
    tokenizer = CLIPTokenizer.from_pretrained(base.path, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base.path, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base.path, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base.path, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(base.path, subfolder="scheduler")
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = config.resolution or unet.config.sample_size * vae_scale
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
    vae.to(device)
    if frozen != torch.float32:
        vae.to(dtype=frozen)
    try:
        objective = DenoisingObjective(scheduler, device)
    except ValueError as exc:
        raise BaseModelError(f"base model {base.describe()}: {exc}") from exc
    return Components(
        tokenizer,
        text_encoder,
        vae,
        unet,
        scheduler,
        device,
        frozen,
        resolution,
        scheduler.alphas_cumprod.to(device),
        objective,
        image_encoder,
    )


def prepare_trainable(
    model: Components, config: TrainConfig, items: Sequence[TrainItem], parents: Sequence[Path]
) -> Trainable:
    """Add the tokens, place the modules, and mark what trains (tokens and/or a LoRA).

    A textual-inversion run plans its tokens from the items; a LoRA or joint run takes the
    embeddings its textual-inversion parent learned, and a joint run also starts from the
    parent LoRA (the last of `parents`)."""
    trains_tokens = config.kind in ("textual_inversion", "joint")
    trains_lora = config.kind in ("lora", "joint")
    if config.kind == "textual_inversion":
        planned = plan_tokens(
            ((i.diagnosis, i.fst) for i in items),
            mode=config.token_mode,
            per_cell_min_images=config.per_cell_min_images,
        )
        token_inits: dict[str, torch.Tensor | str] = dict(planned)
    else:
        if not parents:
            raise ValueError(f"a {config.kind} run needs its parent run(s)")
        token_inits = dict(artifacts.load_token_embeddings(parents[0]))
    token_ids = _add_tokens(model, token_inits)
    text_encoder, unet, dev = model.text_encoder, model.unet, model.device
    text_encoder.to(dev)
    unet.to(dev)
    if not trains_tokens and model.frozen_dtype != torch.float32:
        text_encoder.to(dtype=model.frozen_dtype)
    if not trains_lora and model.frozen_dtype != torch.float32:
        unet.to(dtype=model.frozen_dtype)

    parameters: list[torch.nn.Parameter] = []
    embedding_table = text_encoder.get_input_embeddings().weight
    original_table = embedding_table.detach().clone()
    new_rows = torch.zeros(embedding_table.shape[0], dtype=torch.bool, device=dev)
    new_rows[token_ids] = True
    if trains_tokens:
        embedding_table.requires_grad_(True)
        parameters.append(embedding_table)
    lora_parameters, labels = 0, None
    counts: dict[str, int] = {}
    if trains_lora:
        check_lora_targets(unet, config.lora_targets)
        unet.add_adapter(lora_config(config))
        if config.kind == "joint":
            _load_parent_lora(unet, parents[-1], config)
        lora = [p for p in unet.parameters() if p.requires_grad]
        parameters += lora
        lora_parameters = sum(p.numel() for p in lora)
        labels = prepare_labels(
            unet, config.label_conditioning, parents[-1] if config.kind == "joint" else None
        )
        parameters += list(labels.parameters()) if labels is not None else []
        if model.image_encoder is not None:
            adapter = image_prompt.prepare(
                unet,
                folder=model.image_encoder,
                tokens=config.image_prompt_tokens,
                parent_run=parents[-1] if config.kind == "joint" else None,
            )
            parameters += adapter
            counts["image_prompt"] = sum(p.numel() for p in adapter)
    embedding_rows = len(token_ids) * embedding_table.shape[1] if trains_tokens else 0
    label_count = sum(p.numel() for p in labels.parameters()) if labels is not None else 0
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if trains_tokens:
            text_encoder.gradient_checkpointing_enable()
    unet.train(trains_lora)
    text_encoder.train(trains_tokens)
    return Trainable(
        list(token_inits),
        token_ids,
        parameters,
        trains_tokens,
        trains_lora,
        embedding_table,
        original_table,
        new_rows,
        {
            "lora": lora_parameters,
            "embeddings": embedding_rows,
            "total": lora_parameters + embedding_rows + label_count + sum(counts.values()),
        }
        | ({"labels": label_count} if labels is not None else {})
        | counts,
        labels,
        bool(counts),
    )


def _add_tokens(model: Components, tokens: dict[str, torch.Tensor | str]) -> list[int]:
    """Add tokens (initialised from a word, or given embeddings); returns their ids."""
    tokenizer, encoder = model.tokenizer, model.text_encoder
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = encoder.get_input_embeddings().weight
    ids = []
    with torch.no_grad():
        for token, init in tokens.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(init, str):
                init_ids = tokenizer.encode(init, add_special_tokens=False)
                if len(init_ids) != 1:
                    raise ValueError(f"initialiser {init!r} of {token} is not a single token")
                table[token_id] = table[init_ids[0]].clone()
            else:
                table[token_id] = init.to(table.dtype)
            ids.append(token_id)
    return ids


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=list(config.lora_targets),
    )


def check_lora_targets(unet: Any, targets: Sequence[str]) -> None:
    """Refuse (ConfigError) LoRA targets of which one names no module of ``unet``."""
    missing = unmatched_lora_targets((name for name, _ in unet.named_modules()), targets)
    if missing:
        raise ConfigError(
            f"LoRA target(s) {', '.join(repr(t) for t in missing)} match no module of the "
            "base model's UNet (targets match module names as suffixes, e.g. attn2.to_q)"
        )


def _load_parent_lora(unet: Any, parent: Path, config: TrainConfig) -> None:
    """A joint run continues its LoRA parent's adapter, which must have the same modules,
    rank and alpha as the one this run's settings built."""
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    path = parent / artifacts.LORA_FILE
    state = {k.removeprefix("unet."): v for k, v in load_file(str(path)).items()}
    own = get_peft_model_state_dict(unet)
    with safe_open(str(path), "pt") as fh:
        metadata = json.loads((fh.metadata() or {}).get("lora_adapter_metadata") or "{}")
    alpha = metadata.get("unet.lora_alpha", config.lora_alpha)
    if (
        set(state) != set(own)
        or any(state[k].shape != own[k].shape for k in own)
        or float(alpha) != float(config.lora_alpha)
    ):
        raise ConfigError(
            f"a joint run continues its LoRA parent's adapter, but {path} adapts "
            f"{metadata.get('unet.target_modules', '?')} at rank {metadata.get('unet.r', '?')}, "
            f"alpha {alpha}, and this run's settings {list(config.lora_targets)} at rank "
            f"{config.lora_rank}, alpha {config.lora_alpha}: set lora_targets, lora_rank and "
            "lora_alpha to the parent's"
        )
    set_peft_model_state_dict(unet, state)


def prepare_data(
    config: TrainConfig, items: Sequence[TrainItem], tokens: list[str]
) -> TrainingData:
    sampler = BatchSampler(
        [i.fst for i in items],
        batch_size=config.batch_size,
        seed=config.seed,
        shares=config.fst_shares if config.balanced_sampling else None,
    )
    available = set(tokens)
    prompts = [prompt_for(i.diagnosis, i.fst, available=available) for i in items]
    return TrainingData(sampler, prompts)


def encode_latents(
    model: Components, items: Sequence[TrainItem], progress: Progress
) -> torch.Tensor:
    """Every item's latent, scaled, on the CPU; counted on `progress` in images."""
    # The distribution's mean, not a sample: a fixed cache must not freeze one draw.
    scaling = model.vae.config.scaling_factor
    chunks = []
    with torch.no_grad():
        for start in range(0, len(items), LATENT_BATCH):
            stop = min(start + LATENT_BATCH, len(items))
            pixels = load_images(items, list(range(start, stop)), model.resolution)
            dist = model.vae.encode(pixels.to(model.device, model.frozen_dtype)).latent_dist
            chunks.append((dist.mean * scaling).float().cpu())
            progress.update(stop, len(items), "images")
    return torch.cat(chunks)


def embed_training_images(model: Components, items: Sequence[TrainItem]) -> torch.Tensor | None:
    """Every item's CLIP image embedding (the frozen encoder, once), for the image prompt."""
    if model.image_encoder is None:
        return None
    return image_prompt.embed_images(model.image_encoder, [i.path for i in items], model.device)


def load_images(items: Sequence[TrainItem], indices: list[int], resolution: int) -> torch.Tensor:
    pixels = []
    img: Image.Image  # Image.open gives an ImageFile; convert() a plain Image
    for i in indices:
        with Image.open(items[i].path) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            pixels.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()))
    batch = torch.stack(pixels).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def parameter_groups(
    parameters: list[torch.nn.Parameter], config: TrainConfig, labels: LabelEmbedding | None
) -> list[dict[str, Any]]:
    """The optimiser's groups: everything at ``learning_rate``, and the label tables (when the
    run has them) in a second group at ``label_learning_rate``. The schedule scales both."""
    label_ids = {id(p) for p in labels.parameters()} if labels is not None else set()
    groups = [
        {"params": [p for p in parameters if id(p) not in label_ids], "lr": config.learning_rate}
    ]
    if label_ids:
        own = [p for p in parameters if id(p) in label_ids]
        groups.append({"params": own, "lr": config.label_learning_rate})
    return groups


def fused_adamw(device: torch.device) -> bool | None:
    """Fused AdamW (one kernel over every parameter instead of a loop of small ones) on CUDA,
    where those launches cost step time; torch's default elsewhere, so CPU runs do not change.
    The update is the same (tests/fairskin/diffusion/test_fused_adamw.py, on CPU)."""
    return True if device.type == "cuda" else None


def prepare_optimisation(
    parameters: list[torch.nn.Parameter],
    config: TrainConfig,
    device: torch.device,
    labels: LabelEmbedding | None = None,
) -> Optimisation:
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(
        parameter_groups(parameters, config, labels),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=fused_adamw(device),
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=config.steps,
        num_cycles=config.lr_num_cycles,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.mixed_precision == "fp16")
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
    diversity = DiversityLoss(
        config.diversity_pool,
        form=config.diversity_form,
        eps=config.diversity_eps,
        grouping=config.diversity_group,
    )
    return Optimisation(optimizer, lr_scheduler, scaler, diversity, autocast_dtype)
