"""A trained classifier's evaluation: per-image class probabilities, the seven-class report
per skin type and per skin-type group, and the stored per-image predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from fairskin.classifier.config import ClassifierConfig
from fairskin.classifier.data import ClassifierItem, ImageSet
from fairskin.classifier.fairness import (
    fairness_report,
    fairness_report_multiclass,
    fst_group,
)
from fairskin.classifier.model import CLASS_NAMES, MALIGNANT_CLASSES, SkinClassifier
from fairskin.progress import Progress

PHASE_EVALUATING = "Evaluating on the test split"


def predict_validation(
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
        evaluation["val_predictions"] = predictions(labelled, proba)
        progress.log(f"validation predictions stored for {len(labelled)} images")
    return len(labelled)


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


def predictions(items: Sequence[ClassifierItem], proba: np.ndarray) -> dict[str, Any]:
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
    out["test_predictions"] = predictions(labelled, proba)
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
