"""Checkpoints of a fine-tuning run and its loss log: what a cancelled or crashed run resumes from.

A checkpoint holds the trainable tensors (safetensors) and the states of the optimiser, the
learning-rate scheduler, the gradient scaler, the batch sampler, the diversity pool and the
random generators, so a resumed run continues exactly where the checkpoint was taken. Only the
latest `KEEP_CHECKPOINTS` are kept.

Each checkpoint carries the run's identity record (`fairskin.provenance`): the run's identity,
settings hash, image selection hash, parent runs and base model. A run resumes only from a
checkpoint whose record equals its own; any other is refused (`IdentityMismatch`), never
silently resumed from nor silently discarded. `attempts.json` lists where each attempt started.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fairskin.diffusion import image_prompt, reports
from fairskin.diffusion.training_setup import Components, Optimisation, Trainable, TrainingData
from fairskin.provenance import IDENTITY_FILE, check_identity, settings_hash, write_identity

KEEP_CHECKPOINTS = 2
IMAGE_PROMPT_SETTINGS = ("image_prompt", "image_prompt_dropout", "image_prompt_tokens")
LABEL_SETTINGS = ("label_conditioning", "label_dropout", "label_learning_rate")
# Where a run trains, not what it learns: a run may resume on another number of processes.
PLACEMENT_SETTINGS = ("processes",)


ATTEMPTS_FILE = "attempts.json"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-??????"))
    return found[-1] if found else None


def run_identity(
    *,
    identity: str,
    config: dict[str, Any],
    base_model: str,
    selection_hash: str,
    parents: list[str],
) -> dict[str, Any]:
    """The record a run's checkpoints carry and a resume must match.

    The label settings (issue 17) count only when label conditioning is on, so a run without
    labels keeps the settings hash it had before they existed and still resumes; the same
    holds for the image-prompt settings. The placement settings never count."""
    config = {k: v for k, v in config.items() if k not in PLACEMENT_SETTINGS}
    if not config.get("label_conditioning"):
        config = {k: v for k, v in config.items() if k not in LABEL_SETTINGS}
    if not config.get("image_prompt"):  # likewise the image-prompt settings
        config = {k: v for k, v in config.items() if k not in IMAGE_PROMPT_SETTINGS}
    return {
        "identity": identity,
        "settings_hash": settings_hash(config),
        "selection_hash": selection_hash,
        "parents": list(parents),
        "base_model": base_model,
    }


def default_identity(
    run_dir: Path, config: Any, base_model: str, items: Sequence[Any], parents: Sequence[Path]
) -> dict[str, Any]:
    """The record of a run trained without one given: the folder's name stands for the run,
    the images (path, diagnosis, skin type) for its selection, the parents' folder names."""
    return run_identity(
        identity=run_dir.name,
        config=config.to_dict(),
        base_model=base_model,
        selection_hash=settings_hash({"items": [(i.path, i.diagnosis, i.fst) for i in items]}),
        parents=[p.name for p in parents],
    )


def resume_point(run_dir: Path, identity: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from, refused (`IdentityMismatch`) unless it was written for
    ``identity``; the run folder's own record must match too. Then the record is (re)written
    into the run folder, whence every checkpoint copies it.

    ``identity["accept_unrecorded"]`` (not part of the record): checkpoints written before
    records existed are accepted, for a run folder named the old way on its own row."""
    expected = {k: v for k, v in identity.items() if k != "accept_unrecorded"}
    lenient = bool(identity.get("accept_unrecorded"))
    if (run_dir / IDENTITY_FILE).exists():
        check_identity(run_dir, expected, what="the run folder")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        check_identity(checkpoint, expected, what="the checkpoint", accept_unrecorded=lenient)
    write_identity(run_dir, expected)
    return checkpoint


def record_attempt(run_dir: Path, resumed_from: int | None) -> list[dict[str, Any]]:
    """Append where this attempt starts (fresh, or the checkpoint step) to attempts.json and
    return the whole list (oldest first), for the manifest and the release datasheet."""
    path = run_dir / ATTEMPTS_FILE
    attempts = json.loads(path.read_text()) if path.is_file() else []
    attempts.append({"attempt": len(attempts) + 1, "resumed_from": resumed_from})
    path.write_text(json.dumps(attempts, indent=2))
    return cast("list[dict[str, Any]]", attempts)


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: Components,
    learned: Trainable,
    data: TrainingData,
    optim: Optimisation,
) -> Path:
    return _write_checkpoint(
        run_dir,
        step,
        _trainable_state(model, learned),
        {
            "step": step,
            "optimizer": optim.optimizer.state_dict(),
            "lr_scheduler": optim.lr_scheduler.state_dict(),
            "scaler": optim.scaler.state_dict(),
            "sampler": data.sampler.state(),
            "diversity": optim.diversity.state(),
            "rng": _rng_state(model.device),
        },
    )


def restore_checkpoint(
    checkpoint: Path, model: Components, learned: Trainable, data: TrainingData, optim: Optimisation
) -> int:
    """Load `checkpoint` into the set-up run; returns the step it was taken at."""
    dev = model.device
    saved = load_file(str(checkpoint / "trainable.safetensors"), device=str(dev))
    # Our own file (optimizer and RNG states need full unpickling); never a user upload.
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)  # noqa: S614
    with torch.no_grad():
        for token, token_id in zip(learned.tokens, learned.token_ids, strict=True):
            if f"token.{token}" in saved:
                learned.embedding_table[token_id] = saved[f"token.{token}"]
    if learned.trains_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(
            model.unet,
            {k.removeprefix("lora."): v for k, v in saved.items() if k.startswith("lora.")},
        )
    if learned.image_prompt:
        image_prompt.load_state(
            model.unet,
            {
                k.removeprefix("image_prompt."): v
                for k, v in saved.items()
                if k.startswith("image_prompt.")
            },
            name=f"{checkpoint}",
        )
    if learned.labels is not None:
        with torch.no_grad():
            learned.labels.dx.copy_(saved["labels.dx"])
            learned.labels.fst.copy_(saved["labels.fst"])
    optim.optimizer.load_state_dict(state["optimizer"])
    optim.lr_scheduler.load_state_dict(state["lr_scheduler"])
    optim.scaler.load_state_dict(state["scaler"])
    data.sampler.restore(state["sampler"])
    optim.diversity.restore(state["diversity"])
    _restore_rng(state["rng"], dev)
    return cast("int", state["step"])


def _trainable_state(model: Components, learned: Trainable) -> dict[str, torch.Tensor]:
    state = {
        f"token.{t}": learned.embedding_table[i]
        for t, i in zip(learned.tokens, learned.token_ids, strict=True)
    }
    if learned.trains_lora:
        from peft import get_peft_model_state_dict

        state.update({f"lora.{k}": v for k, v in get_peft_model_state_dict(model.unet).items()})
    if learned.labels is not None:
        state.update({"labels.dx": learned.labels.dx, "labels.fst": learned.labels.fst})
    if learned.image_prompt:
        state.update(
            {f"image_prompt.{k}": v for k, v in image_prompt.adapter_state(model.unet).items()}
        )
    return state


def _write_checkpoint(
    run_dir: Path, step: int, trainable: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    folder = run_dir / "checkpoints" / f"step-{step:06d}"
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in trainable.items()},
        str(staging / "trainable.safetensors"),
    )
    torch.save(state, staging / "state.pt")
    if (run_dir / IDENTITY_FILE).is_file():
        shutil.copyfile(run_dir / IDENTITY_FILE, staging / IDENTITY_FILE)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)  # a checkpoint exists whole or not at all
    for old in sorted((run_dir / "checkpoints").glob("step-??????"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --- the loss log ------------------------------------------------------------------------------


def cut_loss_log(path: Path, step: int) -> list[tuple[int, float]]:
    """Keep the rows of loss.csv up to `step` (where the run resumes; 0 for a fresh run) and
    return their (step, loss): steps after the checkpoint are about to be trained again."""
    earlier = reports.read_loss_log(path, up_to=step)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "loss", "grad_norm"])
        writer.writerows(earlier)
    return [(s, v) for s, v, _ in earlier]


def append_loss(path: Path, step: int, loss: float, grad_norm: float) -> None:
    """One row per optimizer step; grad_norm is the norm before clipping."""
    with path.open("a", newline="") as fh:
        csv.writer(fh).writerow([step, f"{loss:.6f}", f"{grad_norm:.6f}"])
