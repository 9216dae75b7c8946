"""Reads for training runs: which images a selection means."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db.models import F, Q, QuerySet

from catalog.models import Image

DEFAULT_SELECTION = {"datasets": [], "diagnoses": [], "fsts": [1, 2, 3, 4, 5, 6],
                     "split": "train", "synthetic_datasets": []}


def selection_normalise(selection: dict[str, Any]) -> dict[str, Any]:
    data = {**DEFAULT_SELECTION, **(selection or {})}
    return {
        "datasets": sorted(set(data["datasets"])),
        "diagnoses": sorted(set(data["diagnoses"])),
        "fsts": sorted({int(f) for f in data["fsts"]}),
        "split": data["split"] or "",
        "synthetic_datasets": sorted(set(data.get("synthetic_datasets") or [])),
    }


def selection_images(*, selection: dict[str, Any]) -> QuerySet[Image]:
    """Preprocessed images with an exact skin type matching the selection.

    Training prompts name one skin type, so images known only as a range (DDI's I-II) or
    not at all are left out.
    """
    s = selection_normalise(selection)
    images = Image.objects.select_related("dataset").exclude(preprocessed="").filter(
        fst_low__isnull=False, fst_low=F("fst_high"), fst_low__in=s["fsts"])
    if s["datasets"]:
        images = images.filter(dataset__name__in=s["datasets"])
    if s["diagnoses"]:
        images = images.filter(diagnosis__in=s["diagnoses"])
    if s["split"] != "any":
        images = images.filter(split=s["split"])
    return images.order_by("id")


def classifier_images(*, selection: dict[str, Any], split: str | None = None,
                      synthetic: bool = False) -> QuerySet[Image]:
    """A classifier's real images (of ``split``, default the selection's) or its synthetic
    images (any split); the seven classes only, since the head has no OTHER."""
    s = selection_normalise(selection)
    if synthetic:
        if not s["synthetic_datasets"]:
            return Image.objects.none()
        s = {**s, "datasets": s["synthetic_datasets"], "split": "any"}
    elif split is not None:
        s = {**s, "split": split}
    origin = "synthetic" if synthetic else "real"
    images = selection_images(selection=s).filter(origin=origin).exclude(diagnosis="OTHER")
    if synthetic:
        # A generation batch stores its rejected candidates too; only accepted ones may train.
        images = images.filter(Q(sample__isnull=True) | Q(sample__verdict="accepted"))
    return images


def selection_hash(*, selection: dict[str, Any], images: QuerySet[Image]) -> str:
    """Identifies exactly which images (by content) and which selection trained a run."""
    digest = hashlib.sha256(json.dumps(selection_normalise(selection), sort_keys=True).encode())
    for sha in images.values_list("sha256", flat=True):
        digest.update(sha.encode())
    return digest.hexdigest()
