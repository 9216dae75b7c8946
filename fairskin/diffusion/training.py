"""The fine-tuning loop: textual inversion, LoRA and joint refinement in one readable function.

`train` is the step loop (loss, clip, step, log, checkpoint, validate); `_set_up` builds
components, tokens, adapters, data and optimisation (`training_setup`) and resumes from the
latest checkpoint (`checkpoints`, only one written for the same run identity);
`_write_artifacts` writes what the run learned. A run directory holds everything.

Each part that takes time is reported as a progress phase of its own (see ``PHASE_*``), so a
validation grid that renders for minutes never shows as the last training step. The messages
carry the step and loss only: how long is left is the caller's to estimate, per phase.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairskin.diffusion import artifacts, image_prompt, labels_conditioning, reports
from fairskin.diffusion.base_models import BaseModel
from fairskin.diffusion.checkpoints import (
    append_loss,
    cut_loss_log,
    default_identity,
    latest_checkpoint,
    record_attempt,
    restore_checkpoint,
    resume_point,
    save_checkpoint,
)
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.losses import diversity_embedding
from fairskin.diffusion.parallel import ONE_PROCESS, Ranks, reseed_global, sample_generator
from fairskin.diffusion.training_setup import (
    Components,
    Optimisation,
    Trainable,
    TrainingData,
    embed_training_images,
    encode_latents,
    load_components,
    load_images,
    pick_device,
    prepare_data,
    prepare_optimisation,
    prepare_trainable,
)
from fairskin.diffusion.validation_grid import render_validation_grid
from fairskin.diffusion.versions import library_versions
from fairskin.progress import JobCancelled, Progress

PHASE_LOADING = "Loading the base model"
PHASE_LATENTS = "Encoding the training images"
PHASE_RESUMING = "Resuming from the checkpoint"
PHASE_TRAINING = "Training"
PHASE_ARTIFACTS = "Saving artifacts"


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
    after = float(
        torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])
        )
    )
    return before, after


@dataclass
class _Session:
    """Everything the step loop works on, set up (and resumed) by ``_set_up``."""

    dev: torch.device
    model: Components
    learned: Trainable
    data: TrainingData
    optim: Optimisation
    start_step: int
    resumed_from: int | None
    loss_path: Path
    history: list[tuple[int, float]]
    attempts: list[dict[str, Any]]  # where each attempt started (checkpoints.record_attempt)


def train(
    *,
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[TrainItem],
    run_dir: Path,
    progress: Progress,
    parents: Sequence[Path] = (),
    run_info: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    device: str | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> TrainResult:
    """Train (or resume) one run into ``run_dir``.

    ``parents``: a LoRA run takes its textual-inversion run; a joint run takes the TI run
    and the LoRA run, in that order. ``run_info`` (ids, data selection, licences) goes into
    the manifest and model card; ``identity`` is the record a checkpoint must carry to be
    resumed from (by default `checkpoints.default_identity`; a foreign one is refused).
    ``ranks``: this process's place in a data-parallel run (`parallel`; started by
    `launch.train_on_ranks`), where rank 0 alone writes and reports.
    """
    if not items:
        raise ValueError("the run has no training images")
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = identity or default_identity(run_dir, config, base.describe(), items, parents)
    if ranks.is_main:  # rank 0 checks and records; its refusal ends every rank
        resume_point(run_dir, identity)  # a foreign checkpoint is refused before anything loads
    s = _set_up(
        config, base, items, run_dir, progress=progress, parents=parents, device=device, ranks=ranks
    )
    model, learned, data, optim = s.model, s.learned, s.data, s.optim
    table, new_rows = learned.embedding_table, learned.new_rows

    started = time.monotonic()
    step = s.start_step
    main = ranks.is_main
    try:
        # Checkpoints stay inside this phase: they take seconds, and the caller's estimate of
        # the time left should include them rather than restart its rate after each one.
        progress.phase(PHASE_TRAINING, total=config.steps, done=step)
        while step < config.steps:
            step_loss = 0.0
            for micro in range(config.grad_accumulation):
                batch = data.sampler.next_batch()  # the global batch; this rank trains a share
                reseed_global(config.seed, step, micro, ranks.rank)
                with torch.autocast(
                    s.dev.type,
                    dtype=optim.autocast_dtype or torch.float32,
                    enabled=optim.autocast_dtype is not None,
                ):
                    loss = _batch_loss(
                        model,
                        data,
                        optim,
                        config,
                        items=items,
                        batch=batch,
                        draw=(step, micro),
                        ranks=ranks,
                    )
                optim.scaler.scale(loss / config.grad_accumulation).backward()
                step_loss += loss.item() / config.grad_accumulation

            step_loss = ranks.average(learned, step_loss)  # one all-reduce; none alone
            optim.scaler.unscale_(optim.optimizer)
            if learned.trains_tokens and table.grad is not None:
                table.grad[~new_rows] = 0  # only the new tokens learn
            grad_norm, _ = clip_gradients(learned.parameters, config.max_grad_norm)
            optim.scaler.step(optim.optimizer)
            optim.scaler.update()
            optim.lr_scheduler.step()
            optim.optimizer.zero_grad(set_to_none=True)
            if learned.trains_tokens:
                with torch.no_grad():  # weight decay must not move the vocabulary either
                    table[~new_rows] = learned.original_table[~new_rows]
            step += 1
            s.history.append((step, step_loss))
            # The unweighted diversity term, logged by rank 0 (every rank computed the same).
            optim.diversity.end_step(step, run_dir / "diversity.csv" if main else None)
            if main:
                append_loss(s.loss_path, step, step_loss, grad_norm)
            # The step is done before anything slow starts, so the count never lags behind.
            progress.update(
                step, config.steps, f"step {step}/{config.steps} · loss {step_loss:.4f}"
            )
            if main and (step % config.checkpoint_every == 0 or step == config.steps):
                save_checkpoint(run_dir, step, model=model, learned=learned, data=data, optim=optim)
            if main and (step % config.validation_every == 0 or step == config.steps):
                render_validation_grid(
                    model,
                    items,
                    learned.tokens,
                    config,
                    step=step,
                    run_dir=run_dir,
                    progress=progress,
                )
                if step < config.steps:
                    progress.phase(PHASE_TRAINING, total=config.steps, done=step)
    except JobCancelled:
        if main and step > s.start_step:
            save_checkpoint(run_dir, step, model=model, learned=learned, data=data, optim=optim)
            progress.log(f"cancelled at step {step}; checkpoint saved")
        raise
    if not main:  # rank 0 writes what the run learned; the others' modules are the same
        final = s.history[-1][1] if s.history else float("nan")
        return TrainResult(run_dir, config.steps, final, learned.tokens, s.resumed_from, s.history)
    return _write_artifacts(
        s,
        config,
        base,
        items,
        run_dir=run_dir,
        progress=progress,
        parents=parents,
        run_info={**(run_info or {}), "identity": identity, "attempts": s.attempts},
        seconds=time.monotonic() - started,
    )


def _set_up(
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[TrainItem],
    run_dir: Path,
    *,
    progress: Progress,
    parents: Sequence[Path],
    device: str | None,
    ranks: Ranks,
) -> _Session:
    """Components, tokens, adapters, data and optimisation (``training_setup``), then the
    latest checkpoint restored if the run directory has one (`train` checked its identity).
    Every rank sets up the same; only rank 0 writes the run's files."""
    dev = pick_device(device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    progress.phase(PHASE_LOADING)
    model = load_components(base, config, dev)
    learned = prepare_trainable(model, config, items, parents)
    if ranks.is_main:
        reports.write_training_report(run_dir, trainable_parameters=learned.parameter_counts)
    data = prepare_data(config, items, learned.tokens)
    data.image_embeds = embed_training_images(model, items)  # None without the image prompt
    if config.cache_latents:
        progress.phase(PHASE_LATENTS, total=len(items))
        data.cached_latents = encode_latents(model, items, progress)
    optim = prepare_optimisation(learned.parameters, config, dev, learned.labels)

    start_step, resumed_from = 0, None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        progress.phase(PHASE_RESUMING)
        start_step = resumed_from = restore_checkpoint(checkpoint, model, learned, data, optim)
        progress.log(f"resumed from the checkpoint at step {start_step}")
    loss_path = run_dir / "loss.csv"
    return _Session(
        dev=dev,
        model=model,
        learned=learned,
        data=data,
        optim=optim,
        start_step=start_step,
        resumed_from=resumed_from,
        loss_path=loss_path,
        history=cut_loss_log(loss_path, start_step) if ranks.is_main else [],
        attempts=record_attempt(run_dir, resumed_from) if ranks.is_main else [],
    )


def _write_artifacts(
    s: _Session,
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[TrainItem],
    *,
    run_dir: Path,
    progress: Progress,
    parents: Sequence[Path],
    run_info: dict[str, Any] | None,
    seconds: float,
) -> TrainResult:
    """Learned embeddings and LoRA, manifest, model card and loss chart."""
    # Counted as the steps reached: what is left is a few file writes with no count of their own.
    progress.phase(PHASE_ARTIFACTS, total=config.steps, done=config.steps)
    model, learned = s.model, s.learned
    model.unet.eval()
    model.text_encoder.eval()
    if learned.trains_tokens:
        table = learned.embedding_table
        artifacts.save_token_embeddings(
            run_dir,
            {
                t: table[i].detach().float().cpu()
                for t, i in zip(learned.tokens, learned.token_ids, strict=True)
            },
        )
    if learned.trains_lora:
        artifacts.save_lora(run_dir, model.unet)
        labels_conditioning.save_run_labels(run_dir, model.unet)
    adapter = image_prompt.save_run_adapter(run_dir, model.unet, model.image_encoder)
    final_loss = s.history[-1][1] if s.history else float("nan")
    info = {
        "config": config.to_dict(),
        "base_model": base.describe(),
        "base_model_path": base.path,
        "tokens": learned.tokens,
        "steps": config.steps,
        "final_loss": final_loss,
        "resumed_from": s.resumed_from,
        "seconds_this_attempt": round(seconds, 1),
        "device": str(s.dev),
        "parents": [str(p) for p in parents],
        "versions": library_versions(),
        "trainable_parameters": learned.parameter_counts,
        # The textual-inversion guarantee, checked on the trained table (on rank 0 of a
        # data-parallel run; every rank holds the same table).
        **(
            {
                "vocabulary_unchanged": bool(
                    torch.equal(
                        learned.embedding_table.detach()[~learned.new_rows],
                        learned.original_table[~learned.new_rows],
                    )
                )
            }
            if learned.trains_tokens
            else {}
        ),
        **({"image_prompt": adapter} if adapter else {}),  # its file, encoder, token count
        **(run_info or {}),
    }
    (run_dir / "manifest.json").write_text(json.dumps(info, indent=2, default=str))
    (run_dir / "README.md").write_text(reports.model_card(info, items))
    (run_dir / "loss.svg").write_text(reports.loss_svg(s.history))
    return TrainResult(
        run_dir,
        config.steps,
        final_loss,
        learned.tokens,
        s.resumed_from,
        s.history,
        text_encoder=model.text_encoder,
        unet=model.unet,
        tokenizer=model.tokenizer,
    )


def _batch_loss(
    model: Components,
    data: TrainingData,
    optim: Optimisation,
    config: TrainConfig,
    *,
    items: Sequence[TrainItem],
    batch: list[int],
    draw: tuple[int, int],
    ranks: Ranks,
) -> torch.Tensor:
    """The denoising loss of this rank's share of one global micro-batch, plus the weighted
    diversity term over the whole global batch.

    ``draw`` is (step, micro-batch): with the run's seed and a sample's position in the global
    batch it seeds everything random about the sample (`parallel.sample_generator`), drawn in
    a fixed order: timestep, noise, label dropout, image-prompt dropout, VAE posterior."""
    dev, noise_scheduler, unet = model.device, model.scheduler, model.unet
    positions = ranks.positions(len(batch))
    local = [batch[p] for p in positions]
    gens = [sample_generator(config.seed, *draw, p) for p in positions]
    horizon = noise_scheduler.config.num_train_timesteps
    timesteps = torch.cat([torch.randint(0, horizon, (1,), generator=g) for g in gens]).to(dev)
    if data.cached_latents is not None:
        latents = data.cached_latents[local].to(dev)
        posterior = None
    else:
        with torch.no_grad():
            pixels = load_images(items, local, model.resolution)
            posterior = model.vae.encode(pixels.to(dev, model.frozen_dtype)).latent_dist
            latents = posterior.mean.float()
    shape = latents.shape[1:]
    noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dev)
    label_draws = torch.cat([torch.rand(1, generator=g) for g in gens])
    prompt_draws = torch.cat([torch.rand(1, generator=g) for g in gens])
    if posterior is not None:  # the VAE's sample, from the sample's own generator
        eps = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dev)
        latents = (latents + posterior.std.float() * eps) * model.vae.config.scaling_factor
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    tokenizer = model.tokenizer
    ids = tokenizer(
        [data.prompts[i] for i in local],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(dev)
    hidden = model.text_encoder(ids)[0]
    labels = labels_conditioning.batch_labels(
        unet, items, local, config.label_dropout, draws=label_draws
    )
    labels |= image_prompt.batch_conditioning(
        data.image_embeds, local, config.image_prompt_dropout, unet, draws=prompt_draws
    )
    pred = unet(noisy.to(unet.dtype), timesteps, hidden.to(unet.dtype), **labels).sample
    target = model.objective.target(latents, noise, timesteps)  # the noise, or v
    loss = model.objective.loss(pred, target, timesteps, gamma=config.snr_gamma)
    if config.diversity_weight:
        clean = model.objective.clean_latents(noisy, pred, timesteps)
        embeddings = ranks.gather_rows(diversity_embedding(clean))  # the global batch's
        groups = [optim.diversity.group_of(items[i].diagnosis, items[i].fst) for i in batch]
        loss = loss + config.diversity_weight * optim.diversity(embeddings, groups)
    return loss
