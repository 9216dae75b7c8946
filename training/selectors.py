"""Reads for training runs: which runs are finished, which to compare, and which images a
selection means."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.db.models import F, Q, QuerySet

from catalog.models import Image
from jobs import artifacts
from jobs.models import JobState
from training.models import Run, RunKind

DEFAULT_SELECTION = {
    "datasets": [],
    "diagnoses": [],
    "fsts": [1, 2, 3, 4, 5, 6],
    "split": "train",
    "synthetic_datasets": [],
}

# How many recent synthetic-trained classifiers the fairness page compares when none is picked.
COMPARED_BY_DEFAULT = 3


def runs_finished() -> QuerySet[Run]:
    """Runs whose job succeeded: their artifacts are complete and may be built on."""
    return Run.objects.filter(job__state=JobState.SUCCEEDED)


def run_of_job(*, job: Any) -> Run | None:
    """The run a training job works for (None for a job of another kind)."""
    return Run.objects.filter(job_id=job.pk).first()


def run_is_finished(*, run: Run) -> bool:
    """Whether the run's job succeeded (see ``runs_finished``)."""
    return run.job is not None and run.job.state == JobState.SUCCEEDED


def classifier_comparison_runs(
    *, baseline_id: str | None, run_ids: list[str]
) -> tuple[Run | None, list[Run]]:
    """The baseline and the runs the fairness page compares with it, all finished classifiers.

    The baseline is the one asked for, else the confidence model, else the newest classifier
    trained on real images only. The others are the ones asked for, else the newest few
    trained with synthetic images; the baseline is never compared with itself.
    """
    finished = runs_finished().filter(kind=RunKind.CLASSIFIER)
    baseline = (
        finished.filter(pk=baseline_id).first()
        if baseline_id and baseline_id.isdigit()
        else finished.filter(is_confidence_model=True).first()
        or next((r for r in finished.order_by("-created_at") if not r.uses_synthetic), None)
    )
    ids = [int(i) for i in run_ids if i.isdigit()]
    others = (
        list(finished.filter(pk__in=ids))
        if ids
        else [r for r in finished.order_by("-created_at")[:20] if r.uses_synthetic][
            :COMPARED_BY_DEFAULT
        ]
    )
    return baseline, [r for r in others if baseline is None or r.pk != baseline.pk]


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
    images = (
        Image.objects.select_related("dataset")
        .exclude(preprocessed="")
        .filter(fst_low__isnull=False, fst_low=F("fst_high"), fst_low__in=s["fsts"])
    )
    if s["datasets"]:
        images = images.filter(dataset__name__in=s["datasets"])
    if s["diagnoses"]:
        images = images.filter(diagnosis__in=s["diagnoses"])
    if s["split"] != "any":
        images = images.filter(split=s["split"])
    return images.order_by("id")


def classifier_images(
    *, selection: dict[str, Any], split: str | None = None, synthetic: bool = False
) -> QuerySet[Image]:
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


def run_model_folder(run: Run) -> Path:
    """A finished run's folder on this host without its checkpoints: what a child run, a
    generator or a check before a batch reads (fetched from the store once per host)."""
    return artifacts.fetch(
        run.artifacts_dir, include=lambda rel: not rel.startswith("checkpoints/")
    )
