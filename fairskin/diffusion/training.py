"""The fine-tuning loop: textual inversion, LoRA and joint refinement in one readable function.

Phases: set up (components, tokens, adapters), data, then the step loop (loss, clip, step,
log, checkpoint, validate), then artifacts. A run directory holds everything; calling `train`
again on a directory with checkpoints resumes from the latest one.

Each part that takes time is reported as a progress phase of its own (see ``PHASE_*``), so a
validation grid that renders for minutes never shows as the last training step. The messages
carry the step and loss only: how long is left is the caller's to estimate, per phase.
"""

from __future__ import annotations

import csv
import json
import platform
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from fairskin.diffusion import artifacts, reports
from fairskin.diffusion.base_models import BaseModel
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.losses import (
    DiversityLoss,
    denoising_loss,
    diversity_embedding,
    predicted_clean_latents,
)
from fairskin.diffusion.sampling import BatchSampler
from fairskin.diffusion.tokens import plan_tokens, prompt_for
from fairskin.progress import JobCancelled, Progress

KEEP_CHECKPOINTS = 2
VALIDATION_BATCH = 8  # prompts rendered per pipeline call in the validation grid

PHASE_LOADING = "Loading the base model"
PHASE_LATENTS = "Encoding the training images"
PHASE_RESUMING = "Resuming from the checkpoint"
PHASE_TRAINING = "Training"
PHASE_ARTIFACTS = "Saving artifacts"


def validation_phase(step: int) -> str:
    return f"Rendering the validation grid (step {step})"


@dataclass(frozen=True)
class TrainItem:
    path: str  # a preprocessed image file
    diagnosis: str
    fst: int


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    tokens: list[str]
    resumed_from: int | None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    # The trained modules, for callers in the same process (tests, benchmarks).
    text_encoder: Any = field(default=None, repr=False)
    unet: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)


def clip_gradients(parameters: Any, max_norm: float) -> tuple[float, float]:
    """Clip the global gradient norm to ``max_norm``; returns the norm before and after.

    Takes the parameters as a list: given a generator that something else already consumed,
    clipping would silently see nothing (a bug several public training scripts have).
    """
    params = [p for p in list(parameters) if p.grad is not None]
    if not params:
        raise ValueError("no parameter has a gradient to clip")
    before = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    after = float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])))
    return before, after


@dataclass
class _Model:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler: Any
    device: torch.device
    frozen_dtype: torch.dtype
    resolution: int


def _device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_model(base: BaseModel, config: TrainConfig, device: torch.device) -> _Model:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # Frozen weights may live in half precision on a GPU; trainable ones always stay fp32.
    frozen = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision,
                                                                  torch.float32)
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
    return _Model(tokenizer, text_encoder, vae, unet, scheduler, device, frozen, resolution)


def _add_tokens(model: _Model, tokens: dict[str, torch.Tensor | str]) -> list[int]:
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


def _lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, init_lora_weights="gaussian",
                      target_modules=list(config.lora_targets))


def _parent_lora_state(parent: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(parent / artifacts.LORA_FILE))
    return {k.removeprefix("unet."): v for k, v in state.items()}


def _load_images(items: Sequence[TrainItem], indices: list[int], resolution: int) -> torch.Tensor:
    pixels = []
    for i in indices:
        with Image.open(items[i].path) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
            pixels.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()))
    batch = torch.stack(pixels).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def _write_checkpoint(run_dir: Path, step: int, trainable: dict[str, torch.Tensor],
                      state: dict[str, Any]) -> Path:
    folder = run_dir / "checkpoints" / f"step-{step:06d}"
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()},
              str(staging / "trainable.safetensors"))
    torch.save(state, staging / "state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)  # a checkpoint exists whole or not at all
    for old in sorted((run_dir / "checkpoints").glob("step-??????"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-??????"))
    return found[-1] if found else None


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    *,
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[TrainItem],
    run_dir: Path,
    progress: Progress,
    parents: Sequence[Path] = (),
    run_info: dict[str, Any] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train (or resume) one run into ``run_dir``.

    ``parents``: a LoRA run takes its textual-inversion run; a joint run takes the TI run
    and the LoRA run, in that order. ``run_info`` (ids, data selection, licences) goes into
    the manifest and model card.
    """
    if not items:
        raise ValueError("the run has no training images")
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = _device(device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    progress.phase(PHASE_LOADING)
    model = _load_model(base, config, dev)
    tokenizer, text_encoder, unet, vae = (model.tokenizer, model.text_encoder, model.unet,
                                          model.vae)

    # --- tokens and adapters -------------------------------------------------------------
    trains_tokens = config.kind in ("textual_inversion", "joint")
    trains_lora = config.kind in ("lora", "joint")
    if config.kind == "textual_inversion":
        planned = plan_tokens(((i.diagnosis, i.fst) for i in items), mode=config.token_mode,
                              per_cell_min_images=config.per_cell_min_images)
        token_inits: dict[str, torch.Tensor | str] = dict(planned)
    else:
        if not parents:
            raise ValueError(f"a {config.kind} run needs its parent run(s)")
        token_inits = dict(artifacts.load_token_embeddings(parents[0]))
    token_ids = _add_tokens(model, token_inits)
    tokens = list(token_inits)
    text_encoder.to(dev)
    unet.to(dev)
    if not trains_tokens and model.frozen_dtype != torch.float32:
        text_encoder.to(dtype=model.frozen_dtype)
    if not trains_lora and model.frozen_dtype != torch.float32:
        unet.to(dtype=model.frozen_dtype)

    trainable: list[torch.nn.Parameter] = []
    embedding_table = text_encoder.get_input_embeddings().weight
    original_table = embedding_table.detach().clone()
    new_rows = torch.zeros(embedding_table.shape[0], dtype=torch.bool, device=dev)
    new_rows[token_ids] = True
    if trains_tokens:
        embedding_table.requires_grad_(True)
        trainable.append(embedding_table)
    if trains_lora:
        unet.add_adapter(_lora_config(config))
        if config.kind == "joint":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unet, _parent_lora_state(parents[-1]))
        trainable += [p for p in unet.parameters() if p.requires_grad]
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if trains_tokens:
            text_encoder.gradient_checkpointing_enable()
    unet.train(trains_lora)
    text_encoder.train(trains_tokens)

    # --- data ------------------------------------------------------------------------------
    sampler = BatchSampler([i.fst for i in items], batch_size=config.batch_size,
                           seed=config.seed,
                           shares=config.fst_shares if config.balanced_sampling else None)
    available = set(tokens)
    prompts = [prompt_for(i.diagnosis, i.fst, available=available) for i in items]
    scaling = vae.config.scaling_factor
    cached_latents: torch.Tensor | None = None
    if config.cache_latents:
        # The distribution's mean, not a sample: a fixed cache must not freeze one draw.
        progress.phase(PHASE_LATENTS, total=len(items))
        chunks = []
        with torch.no_grad():
            for start in range(0, len(items), 16):
                stop = min(start + 16, len(items))
                pixels = _load_images(items, list(range(start, stop)), model.resolution)
                dist = vae.encode(pixels.to(dev, model.frozen_dtype)).latent_dist
                chunks.append((dist.mean * scaling).float().cpu())
                progress.update(stop, len(items), "images")
        cached_latents = torch.cat(chunks)

    # --- optimisation ------------------------------------------------------------------------
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_snr

    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.steps, num_cycles=config.lr_num_cycles)
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=config.mixed_precision == "fp16")
    diversity = DiversityLoss(config.diversity_pool)
    noise_scheduler = model.scheduler
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(dev)

    # --- resume ---------------------------------------------------------------------------
    start_step, resumed_from = 0, None
    loss_path = run_dir / "loss.csv"
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        progress.phase(PHASE_RESUMING)
        saved = load_file(str(checkpoint / "trainable.safetensors"), device=str(dev))
        # Our own file (optimizer and RNG states need full unpickling); never a user upload.
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)  # noqa: S614
        with torch.no_grad():
            for token, token_id in zip(tokens, token_ids, strict=True):
                if f"token.{token}" in saved:
                    embedding_table[token_id] = saved[f"token.{token}"]
        if trains_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unet, {k.removeprefix("lora."): v for k, v in saved.items()
                                             if k.startswith("lora.")})
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler.load_state_dict(state["scaler"])
        sampler.restore(state["sampler"])
        diversity.restore(state["diversity"])
        _restore_rng(state["rng"], dev)
        start_step = resumed_from = state["step"]
        progress.log(f"resumed from the checkpoint at step {start_step}")
    earlier = reports.read_loss_log(loss_path, up_to=start_step)
    _write_loss(loss_path, earlier)
    history = [(s, v) for s, v, _ in earlier]

    def trainable_state() -> dict[str, torch.Tensor]:
        state = {f"token.{t}": embedding_table[i] for t, i in zip(tokens, token_ids, strict=True)}
        if trains_lora:
            from peft import get_peft_model_state_dict

            state.update({f"lora.{k}": v for k, v in get_peft_model_state_dict(unet).items()})
        return state

    def checkpoint_now(step: int) -> None:
        _write_checkpoint(run_dir, step, trainable_state(), {
            "step": step, "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(),
            "sampler": sampler.state(), "diversity": diversity.state(), "rng": _rng_state(dev),
        })

    def encode_prompts(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(dev)
        return text_encoder(ids)[0]

    # --- the step loop -----------------------------------------------------------------------
    started = time.monotonic()
    step = start_step
    try:
        # Checkpoints stay inside this phase: they take seconds, and the caller's estimate of
        # the time left should include them rather than restart its rate after each one.
        progress.phase(PHASE_TRAINING, total=config.steps, done=step)
        while step < config.steps:
            step_loss = 0.0
            for _ in range(config.grad_accumulation):
                batch = sampler.next_batch()
                with torch.autocast(dev.type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):
                    if cached_latents is not None:
                        latents = cached_latents[batch].to(dev)
                    else:
                        with torch.no_grad():
                            pixels = _load_images(items, batch, model.resolution)
                            latents = vae.encode(
                                pixels.to(dev, model.frozen_dtype)).latent_dist.sample()
                            latents = latents.float() * scaling
                    noise = torch.randn_like(latents)
                    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps,
                                              (latents.shape[0],), device=dev)
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    hidden = encode_prompts([prompts[i] for i in batch])
                    pred = unet(noisy.to(unet.dtype), timesteps,
                                hidden.to(unet.dtype)).sample
                    snr = compute_snr(noise_scheduler, timesteps) if config.snr_gamma else None
                    loss = denoising_loss(pred, noise, snr=snr, gamma=config.snr_gamma)
                    if config.diversity_weight:
                        clean = predicted_clean_latents(noisy, pred, alphas_cumprod[timesteps])
                        loss = loss + config.diversity_weight * diversity(
                            diversity_embedding(clean), [items[i].diagnosis for i in batch])
                scaler.scale(loss / config.grad_accumulation).backward()
                step_loss += loss.item() / config.grad_accumulation

            scaler.unscale_(optimizer)
            if trains_tokens and embedding_table.grad is not None:
                embedding_table.grad[~new_rows] = 0  # only the new tokens learn
            grad_norm, _ = clip_gradients(trainable, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if trains_tokens:
                with torch.no_grad():  # weight decay must not move the vocabulary either
                    embedding_table[~new_rows] = original_table[~new_rows]
            step += 1
            history.append((step, step_loss))
            _append_loss(loss_path, step, step_loss, grad_norm)
            # The step is done before anything slow starts, so the count never lags behind.
            progress.update(step, config.steps,
                            f"step {step}/{config.steps} · loss {step_loss:.4f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint_now(step)
            if step % config.validation_every == 0 or step == config.steps:
                _validation_grid(model, items, tokens, config, step, run_dir, progress)
                if step < config.steps:
                    progress.phase(PHASE_TRAINING, total=config.steps, done=step)
    except JobCancelled:
        if step > start_step:
            checkpoint_now(step)
            progress.log(f"cancelled at step {step}; checkpoint saved")
        raise

    # --- artifacts ---------------------------------------------------------------------------
    # Counted as the steps reached: what is left is a few file writes with no count of their own.
    progress.phase(PHASE_ARTIFACTS, total=config.steps, done=config.steps)
    unet.eval()
    text_encoder.eval()
    if trains_tokens:
        artifacts.save_token_embeddings(run_dir, {
            t: embedding_table[i].detach().float().cpu() for t, i in zip(tokens, token_ids,
                                                                          strict=True)})
    if trains_lora:
        artifacts.save_lora(run_dir, unet)
    final_loss = history[-1][1] if history else float("nan")
    info = {
        "config": config.to_dict(), "base_model": base.describe(),
        "base_model_path": base.path, "tokens": tokens, "steps": config.steps,
        "final_loss": final_loss, "resumed_from": resumed_from,
        "seconds_this_attempt": round(time.monotonic() - started, 1), "device": str(dev),
        "parents": [str(p) for p in parents], "versions": library_versions(),
        **(run_info or {}),
    }
    (run_dir / "manifest.json").write_text(json.dumps(info, indent=2, default=str))
    (run_dir / "README.md").write_text(reports.model_card(info, items))
    (run_dir / "loss.svg").write_text(reports.loss_svg(history))
    return TrainResult(run_dir, config.steps, final_loss, tokens, resumed_from, history,
                       text_encoder=text_encoder, unet=unet, tokenizer=tokenizer)


def library_versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def _write_loss(path: Path, rows: list[tuple[int, float, float]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "loss", "grad_norm"])
        writer.writerows(rows)


def _append_loss(path: Path, step: int, loss: float, grad_norm: float) -> None:
    """One row per optimizer step; grad_norm is the norm before clipping."""
    with path.open("a", newline="") as fh:
        csv.writer(fh).writerow([step, f"{loss:.6f}", f"{grad_norm:.6f}"])


def _validation_grid(model: _Model, items: Sequence[TrainItem], tokens: list[str],
                     config: TrainConfig, step: int, run_dir: Path, progress: Progress) -> Path:
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
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(model.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    images = []
    with torch.no_grad():
        for start in range(0, len(cells), VALIDATION_BATCH):
            chunk = cells[start:start + VALIDATION_BATCH]
            generators = [torch.Generator(model.device).manual_seed(config.seed + start + k)
                          for k in range(len(chunk))]
            out = pipe([prompt_for(dx, fst, available=tokens) for dx, fst in chunk],
                       num_inference_steps=config.validation_inference_steps,
                       guidance_scale=7.5, generator=generators, height=model.resolution,
                       width=model.resolution, output_type="pil")
            images += out.images
            progress.update(len(images), len(cells), "images")
    model.unet.train(was_training[0])
    model.text_encoder.train(was_training[1])
    path = run_dir / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    reports.image_grid(images, rows=len(diagnoses), cols=6,
                       row_labels=diagnoses, col_labels=["I", "II", "III", "IV", "V", "VI"]
                       ).save(path)
    return path
