"""Checkpoints of a fine-tuning run and its loss log: what a cancelled or crashed run resumes from.

A checkpoint holds the trainable tensors (safetensors) and the states of the optimiser, the
learning-rate scheduler, the gradient scaler, the batch sampler, the diversity pool and the
random generators, so a resumed run continues exactly where the checkpoint was taken. Only the
latest `KEEP_CHECKPOINTS` are kept.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fairskin.diffusion import reports
from fairskin.diffusion.training_setup import Components, Optimisation, Trainable, TrainingData

KEEP_CHECKPOINTS = 2


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-??????"))
    return found[-1] if found else None


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
