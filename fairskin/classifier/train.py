"""Classifier training in three phases, checkpointed per epoch, then evaluation by skin type.

Phase 1 (optional): pre-training on synthetic images only. Phase 2: fine-tuning on the
real + synthetic mixture, lr 1e-4 dropping to 1e-5 half-way. Phase 3 (optional): domain-
adversarial training, a real-vs-synthetic discriminator on the features behind a gradient-
reversal layer, so the features stop telling the two apart.

Progress comes as phases: loading the network, one phase per training phase counted in its
own batches (the message names the epoch), then the evaluation, counted in test images.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler

from fairskin.classifier.config import ClassifierConfig
from fairskin.classifier.data import ClassifierItem, ImageSet, mixture_weights
from fairskin.classifier.evaluation import evaluate, predict_validation
from fairskin.classifier.model import (
    CLASS_NAMES,
    SkinClassifier,
    build_classifier,
    reverse_gradient,
)
from fairskin.classifier.on_the_fly import OnTheFlyCache
from fairskin.progress import JobCancelled, Progress
from fairskin.provenance import check_record, settings_hash

MODEL_FILE = "classifier.pt"
PREDICTIONS_FILE = "test_predictions.json"
# Per-image predictions on the validation split, never used to train or pick a checkpoint:
# hard-example planning reads the errors here so the test split stays an honest evaluation.
VAL_PREDICTIONS_FILE = "val_predictions.json"


@dataclass
class ClassifierResult:
    run_dir: Path
    weights_source: str
    evaluation: dict[str, Any]
    resumed_from: tuple[str, int] | None
    model: SkinClassifier | None = field(default=None, repr=False)


PHASES = ("pretrain", "finetune", "dann")
PHASE_NAMES = {
    "pretrain": "Pre-training on synthetic images",
    "finetune": "Fine-tuning on real and synthetic images",
    "dann": "Domain-adversarial training",
}
PHASE_LOADING = "Loading the classifier network"


def _phase_epochs(config: ClassifierConfig) -> list[tuple[str, int]]:
    return [
        (p, n)
        for p, n in zip(
            PHASES, (config.pretrain_epochs, config.epochs, config.dann_epochs), strict=True
        )
        if n
    ]


def _epoch_size(
    items: Sequence[ClassifierItem], phase: str, on_the_fly: OnTheFlyCache | None
) -> int:
    """Draws per epoch: the run's own images (the phase's), or where pre-training has only
    on-the-fly images, the cache's size. On-the-fly images never lengthen an epoch."""
    used = sum(1 for i in items if phase != "pretrain" or i.synthetic)
    if not used and on_the_fly is not None:
        return on_the_fly.plan.cache
    return used


def _batches_per_epoch(
    items: Sequence[ClassifierItem],
    config: ClassifierConfig,
    phase: str,
    on_the_fly: OnTheFlyCache | None = None,
) -> int:
    return -(-_epoch_size(items, phase, on_the_fly) // config.batch_size)


def _loader(
    items: Sequence[ClassifierItem],
    config: ClassifierConfig,
    *,
    phase: str,
    epoch: int,
    generator: torch.Generator,
    on_the_fly: OnTheFlyCache | None = None,
    run_epoch: int = 0,
) -> DataLoader[Any]:
    """One epoch's loader. With on-the-fly generation, the cache as this epoch (``run_epoch``,
    counted over all phases) sees it joins the items, and its draws are recorded."""
    size = _epoch_size(items, phase, on_the_fly)
    if on_the_fly is not None:
        items = [*items, *on_the_fly.items_for_epoch(run_epoch)]
    share = config.on_the_fly_share if on_the_fly is not None else 0.0
    if phase == "pretrain":
        items = [i for i in items if i.synthetic]
        # Synthetic images only (no real image: each type's draws are all synthetic).
        weights = (
            torch.ones(len(items), dtype=torch.float64)
            if on_the_fly is None
            else mixture_weights(items, {}, on_the_fly_share=share)
        )
    else:
        weights = mixture_weights(
            items,
            config.synthetic_shares,
            epoch=epoch,
            ramp_epochs=config.ramp_epochs,
            on_the_fly_share=share,
        )
    # torch annotates weights as Sequence[float]; it takes (and documents) a Tensor too.
    sampler = WeightedRandomSampler(
        weights,  # type: ignore[arg-type]
        num_samples=size,
        replacement=True,
        generator=generator,
    )
    order = list(sampler)  # the same draws the loader would make; counted before use
    if on_the_fly is not None:
        on_the_fly.count_draws(run_epoch, items, order)
    return DataLoader(
        ImageSet(items, config.image_size, train=True),
        batch_size=config.batch_size,
        sampler=order,
        num_workers=0,
    )


def _save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    path = run_dir / "checkpoint.pt"
    tmp = path.with_suffix(".partial")
    torch.save(state, tmp)
    tmp.replace(path)  # a checkpoint is whole or absent


def _identity(
    given: dict[str, Any] | None,
    config: ClassifierConfig,
    run_dir: Path,
    items: Sequence[ClassifierItem],
) -> tuple[dict[str, Any], bool]:
    """The record a checkpoint must carry, and whether one with no record is accepted."""
    record = given or {
        "identity": run_dir.name,
        "settings_hash": settings_hash(config.to_dict()),
        "selection_hash": settings_hash({"items": [i.path for i in items]}),
    }
    lenient = bool(record.get("accept_unrecorded"))
    return {k: v for k, v in record.items() if k != "accept_unrecorded"}, lenient


def train_classifier(
    *,
    config: ClassifierConfig,
    train_items: Sequence[ClassifierItem],
    test_items: Sequence[ClassifierItem],
    run_dir: Path,
    progress: Progress,
    device: str | None = None,
    run_info: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    val_items: Sequence[ClassifierItem] = (),
    on_the_fly: OnTheFlyCache | None = None,
) -> ClassifierResult:
    """Train (or resume from ``run_dir``'s checkpoint) and evaluate. ``identity``: the record
    the checkpoint must carry to be resumed from (by default the folder's name, the settings
    and the images); a checkpoint of anything else is refused (`IdentityMismatch`).
    ``val_items``: validation images whose per-image predictions are stored
    (``val_predictions.json``) for hard-example planning; they do not affect training.
    ``on_the_fly``: the cache of images generated as the run trains, when its settings ask
    for them (``on_the_fly_share``)."""
    _check_inputs(config, train_items, on_the_fly)
    run_dir.mkdir(parents=True, exist_ok=True)
    identity, lenient = _identity(identity, config, run_dir, train_items)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    progress.phase(PHASE_LOADING)
    model, weights_source = build_classifier(
        len(CLASS_NAMES), weights=config.weights, arch=config.arch
    )
    model.to(dev)
    generator = torch.Generator().manual_seed(config.seed)
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=config.mixed_precision == "fp16")
    plan = _phase_epochs(config)

    state = _resume(run_dir, model, generator, identity, lenient=lenient, progress=progress)
    start: tuple[str, int] | None = (state["phase"], state["epoch"]) if state else None

    def begins_after_checkpoint(phase: str, epoch: int) -> bool:
        if start is None:
            return True
        return (PHASES.index(phase), epoch) > (PHASES.index(start[0]), start[1])

    started = time.perf_counter()
    for number, (phase, epochs) in enumerate(plan):
        offset = sum(n for _, n in plan[:number])  # epochs of the phases before this one
        params = [
            p
            for n, p in model.named_parameters()
            if phase == "dann" or not n.startswith("domain_head")
        ]
        optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        # lr 1e-4 for the first half of the phase, then 1e-5.
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer,
            milestones=[max(1, epochs // 2)],
            gamma=config.final_learning_rate / config.learning_rate,
        )
        if start is not None and state.get("phase") == phase:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        per_epoch = _batches_per_epoch(train_items, config, phase, on_the_fly)
        to_run = [e for e in range(epochs) if begins_after_checkpoint(phase, e)]
        if not to_run:
            continue  # finished before the checkpoint this run resumed from
        phase_total = epochs * per_epoch
        done_batches = (epochs - len(to_run)) * per_epoch
        progress.phase(PHASE_NAMES[phase], total=phase_total, done=done_batches)
        for epoch in to_run:
            model.train()
            for pixels, labels, synthetic in _loader(
                train_items,
                config,
                phase=phase,
                epoch=epoch,
                generator=generator,
                on_the_fly=on_the_fly,
                run_epoch=offset + epoch,
            ):
                pixels, labels = pixels.to(dev), labels.to(dev)
                with torch.autocast(
                    dev.type, dtype=autocast or torch.float32, enabled=autocast is not None
                ):
                    features = model.features(pixels)
                    loss = F.cross_entropy(model.head(features), labels)
                    if phase == "dann":
                        domain = model.domain_head(
                            reverse_gradient(features, config.dann_strength)
                        ).squeeze(1)
                        loss = loss + F.binary_cross_entropy_with_logits(
                            domain.float(), synthetic.float().to(dev)
                        )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                done_batches += 1
                try:
                    progress.update(
                        min(done_batches, phase_total),
                        phase_total,
                        f"epoch {epoch + 1}/{epochs} · loss {loss.item():.3f}",
                    )
                except JobCancelled:
                    progress.log("cancelled; resumes from the last finished epoch")
                    raise
            scheduler.step()
            _save_checkpoint(
                run_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "phase": phase,
                    "epoch": epoch,
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "identity": identity,
                },
            )

    torch.save(model.state_dict(), run_dir / MODEL_FILE)
    fly_summary = on_the_fly.finish(time.perf_counter() - started) if on_the_fly else None
    evaluation = evaluate(model, test_items, config, dev, progress=progress)
    if fly_summary is not None:
        evaluation["on_the_fly"] = fly_summary
    val_images = predict_validation(
        model, val_items, config, dev, evaluation=evaluation, progress=progress
    )
    info = {
        "config": config.to_dict(),
        "weights_source": weights_source,
        "classes": CLASS_NAMES,
        "train_images": len(train_items),
        "synthetic_train_images": sum(i.synthetic for i in train_items),
        # Every released synthetic image the run could draw (its on-the-fly images are
        # listed in their own record, RECORD_FILE of fairskin.classifier.on_the_fly).
        "synthetic_image_ids": [i.key or i.path for i in train_items if i.synthetic],
        "test_images": len(test_items),
        "val_images": val_images,
        "on_the_fly": fly_summary,
        **(run_info or {}),
    }
    _write_outputs(run_dir, info, evaluation)
    shutil.rmtree(run_dir / "checkpoint.partial", ignore_errors=True)
    return ClassifierResult(run_dir, weights_source, evaluation, start, model)


def _resume(
    run_dir: Path,
    model: SkinClassifier,
    generator: torch.Generator,
    identity: dict[str, Any],
    *,
    lenient: bool,
    progress: Progress,
) -> dict[str, Any]:
    """The run's checkpoint, its model and random states restored; {} when there is none."""
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        return {}
    # Our own file (optimizer state needs full unpickling); never a user upload.
    state: dict[str, Any] = torch.load(checkpoint, map_location="cpu", weights_only=False)  # noqa: S614
    check_record(
        state.get("identity"),
        identity,
        what=f"the checkpoint {checkpoint}",
        accept_unrecorded=lenient,
    )
    model.load_state_dict(state["model"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    progress.log(f"resumed after {state['phase']} epoch {state['epoch'] + 1}")
    return state


def _check_inputs(
    config: ClassifierConfig,
    train_items: Sequence[ClassifierItem],
    on_the_fly: OnTheFlyCache | None,
) -> None:
    if not train_items:
        raise ValueError("no training images")
    if config.on_the_fly != (on_the_fly is not None):
        raise ValueError(
            "on_the_fly_share > 0 needs an on-the-fly cache, and a cache needs the share"
        )
    released = any(i.synthetic for i in train_items)
    if config.pretrain_epochs and not released and on_the_fly is None:
        raise ValueError("synthetic pre-training was asked for but the run has no synthetic images")
    if on_the_fly is not None and not released and config.on_the_fly_share != 1:
        raise ValueError(
            "with no released synthetic images every synthetic draw is an on-the-fly image: "
            f"set on_the_fly_share to 1 (it is {config.on_the_fly_share})"
        )


def _write_outputs(run_dir: Path, info: dict[str, Any], evaluation: dict[str, Any]) -> None:
    """The manifest and the evaluation. Per-image test predictions go to their own file
    (paired comparisons between runs read it); the evaluation keeps its name and size."""
    for key, name in (
        ("test_predictions", PREDICTIONS_FILE),
        ("val_predictions", VAL_PREDICTIONS_FILE),
    ):
        predictions = evaluation.pop(key, None)
        if predictions is not None:
            (run_dir / name).write_text(json.dumps(predictions))
            evaluation[key] = {"file": name, "images": len(predictions["ids"])}
    (run_dir / "manifest.json").write_text(json.dumps(info, indent=2, default=str))
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=str))


def load_classifier(run_dir: Path, device: str = "cpu") -> tuple[SkinClassifier, dict[str, Any]]:
    """A trained classifier and its manifest (the generation quality filter uses this)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    model, _ = build_classifier(
        len(manifest["classes"]), arch=manifest["config"]["arch"], weights=None
    )
    model.load_state_dict(torch.load(run_dir / MODEL_FILE, map_location=device, weights_only=True))
    return model.to(device).eval(), manifest
