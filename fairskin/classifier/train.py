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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler

from fairskin.classifier.config import ClassifierConfig
from fairskin.classifier.data import ClassifierItem, ImageSet, mixture_weights
from fairskin.classifier.fairness import (
    fairness_report,
    fairness_report_multiclass,
    fst_group,
)
from fairskin.classifier.model import (
    CLASS_NAMES,
    MALIGNANT_CLASSES,
    SkinClassifier,
    build_classifier,
    reverse_gradient,
)
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
PHASE_EVALUATING = "Evaluating on the test split"


def _phase_epochs(config: ClassifierConfig) -> list[tuple[str, int]]:
    return [
        (p, n)
        for p, n in zip(
            PHASES, (config.pretrain_epochs, config.epochs, config.dann_epochs), strict=True
        )
        if n
    ]


def _batches_per_epoch(
    items: Sequence[ClassifierItem], config: ClassifierConfig, phase: str
) -> int:
    used = sum(1 for i in items if phase != "pretrain" or i.synthetic)
    return -(-used // config.batch_size)


def _loader(
    items: Sequence[ClassifierItem],
    config: ClassifierConfig,
    *,
    phase: str,
    epoch: int,
    generator: torch.Generator,
) -> DataLoader[Any]:
    if phase == "pretrain":
        items = [i for i in items if i.synthetic]
        weights = torch.ones(len(items), dtype=torch.float64)
    else:
        weights = mixture_weights(
            items, config.synthetic_shares, epoch=epoch, ramp_epochs=config.ramp_epochs
        )
    # torch annotates weights as Sequence[float]; it takes (and documents) a Tensor too.
    sampler = WeightedRandomSampler(
        weights,  # type: ignore[arg-type]
        num_samples=len(items),
        replacement=True,
        generator=generator,
    )
    return DataLoader(
        ImageSet(items, config.image_size, train=True),
        batch_size=config.batch_size,
        sampler=sampler,
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
) -> ClassifierResult:
    """Train (or resume from ``run_dir``'s checkpoint) and evaluate. ``identity``: the record
    the checkpoint must carry to be resumed from (by default the folder's name, the settings
    and the images); a checkpoint of anything else is refused (`IdentityMismatch`).
    ``val_items``: validation images whose per-image predictions are stored
    (``val_predictions.json``) for hard-example planning; they do not affect training."""
    if not train_items:
        raise ValueError("no training images")
    if config.pretrain_epochs and not any(i.synthetic for i in train_items):
        raise ValueError("synthetic pre-training was asked for but the run has no synthetic images")
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

    start: tuple[str, int] | None = None
    state: dict[str, Any] = {}
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.exists():
        # Our own file (optimizer state needs full unpickling); never a user upload.
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # noqa: S614
        check_record(
            state.get("identity"),
            identity,
            what=f"the checkpoint {checkpoint}",
            accept_unrecorded=lenient,
        )
        model.load_state_dict(state["model"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = (state["phase"], state["epoch"])
        progress.log(f"resumed after {state['phase']} epoch {state['epoch'] + 1}")

    def begins_after_checkpoint(phase: str, epoch: int) -> bool:
        if start is None:
            return True
        return (PHASES.index(phase), epoch) > (PHASES.index(start[0]), start[1])

    for phase, epochs in plan:
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
        per_epoch = _batches_per_epoch(train_items, config, phase)
        to_run = [e for e in range(epochs) if begins_after_checkpoint(phase, e)]
        if not to_run:
            continue  # finished before the checkpoint this run resumed from
        phase_total = epochs * per_epoch
        done_batches = (epochs - len(to_run)) * per_epoch
        progress.phase(PHASE_NAMES[phase], total=phase_total, done=done_batches)
        for epoch in to_run:
            model.train()
            for pixels, labels, synthetic in _loader(
                train_items, config, phase=phase, epoch=epoch, generator=generator
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
    evaluation = evaluate(model, test_items, config, dev, progress=progress)
    val_images = _predict_validation(
        model, val_items, config, dev, evaluation=evaluation, progress=progress
    )
    info = {
        "config": config.to_dict(),
        "weights_source": weights_source,
        "classes": CLASS_NAMES,
        "train_images": len(train_items),
        "synthetic_train_images": sum(i.synthetic for i in train_items),
        "test_images": len(test_items),
        "val_images": val_images,
        **(run_info or {}),
    }
    _write_outputs(run_dir, info, evaluation)
    shutil.rmtree(run_dir / "checkpoint.partial", ignore_errors=True)
    return ClassifierResult(run_dir, weights_source, evaluation, start, model)


def _predict_validation(
    model: SkinClassifier,
    items: Sequence[ClassifierItem],
    config: ClassifierConfig,
    device: torch.device,
    *,
    evaluation: dict[str, Any],
    progress: Progress,
) -> int:
    """Per-image predictions on the validation images with a skin type, added to
    ``evaluation`` (written to their own file); how many there were."""
    labelled = [i for i in items if i.fst is not None]
    if labelled:
        proba = predict_proba(model, labelled, config.image_size, device)
        evaluation["val_predictions"] = _predictions(labelled, proba)
        progress.log(f"validation predictions stored for {len(labelled)} images")
    return len(labelled)


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


@torch.no_grad()
def predict_proba(
    model: SkinClassifier,
    items: Sequence[ClassifierItem],
    image_size: int,
    device: torch.device,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    model.eval()
    loader = DataLoader(ImageSet(items, image_size, train=False), batch_size=batch_size)
    chunks = []
    for pixels, _, _ in loader:
        chunks.append(torch.softmax(model(pixels.to(device)).float(), dim=1).cpu())
        if progress is not None:
            done = sum(len(c) for c in chunks)
            progress.update(done, len(items), "images")
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, len(CLASS_NAMES)))


def _predictions(items: Sequence[ClassifierItem], proba: np.ndarray) -> dict[str, Any]:
    """Per-image predictions as stored: image ids, labels, skin types, class probabilities."""
    return {
        "classes": CLASS_NAMES,
        "ids": [i.key or i.path for i in items],
        "labels": [i.label for i in items],
        "fst": [i.fst for i in items],
        "proba": np.round(proba, 6).tolist(),
    }


def _keyed(report: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly: group keys become strings."""
    return cast("dict[str, Any]", json.loads(json.dumps(report, default=str)))


def evaluate(
    model: SkinClassifier,
    items: Sequence[ClassifierItem],
    config: ClassifierConfig,
    device: torch.device,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Seven-class report per FST and per FST group; binary malignancy view where known."""
    labelled = [i for i in items if i.fst is not None]
    if progress is not None:  # images without a skin type are not scored: count what is
        progress.phase(PHASE_EVALUATING, total=len(labelled))
    if not labelled:
        return {"error": "no test image with a known skin type"}
    proba = predict_proba(model, labelled, config.image_size, device, progress=progress)
    y = [i.label for i in labelled]
    out: dict[str, Any] = {
        "by_fst": _keyed(
            fairness_report_multiclass(
                y,
                proba,
                [i.fst for i in labelled],
                class_names=CLASS_NAMES,
                n_bootstrap=config.bootstrap,
                seed=config.seed,
            )
        ),
        "by_fst_group": _keyed(
            fairness_report_multiclass(
                y,
                proba,
                [fst_group(cast(int, i.fst)) for i in labelled],
                class_names=CLASS_NAMES,
                n_bootstrap=config.bootstrap,
                seed=config.seed,
            )
        ),
    }
    out["test_predictions"] = _predictions(labelled, proba)
    with_flag = [k for k, i in enumerate(labelled) if i.malignant is not None]
    if with_flag:
        malignant = [CLASS_NAMES.index(c) for c in MALIGNANT_CLASSES]
        out["malignant_vs_benign"] = _keyed(
            fairness_report(
                [int(cast(bool, labelled[k].malignant)) for k in with_flag],
                proba[with_flag][:, malignant].sum(axis=1),
                [fst_group(cast(int, labelled[k].fst)) for k in with_flag],
                n_bootstrap=config.bootstrap,
                seed=config.seed,
            )
        )
    return out


def load_classifier(run_dir: Path, device: str = "cpu") -> tuple[SkinClassifier, dict[str, Any]]:
    """A trained classifier and its manifest (the generation quality filter uses this)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    model, _ = build_classifier(
        len(manifest["classes"]), arch=manifest["config"]["arch"], weights=None
    )
    model.load_state_dict(torch.load(run_dir / MODEL_FILE, map_location=device, weights_only=True))
    return model.to(device).eval(), manifest
