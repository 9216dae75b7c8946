"""What a run's page shows besides the run row: its artifact files, the loss chart, the
classifier's per-skin-type table and the links to the next step of the pipeline."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from fairskin.charts import line_chart
from fairskin.diffusion.reports import read_loss_log
from jobs import artifacts
from training.models import Run, RunKind
from training.reports import run_file
from training.selectors import run_is_finished

# Files a run writes at the top of its folder, listed (and served) when present.
ARTIFACT_NAMES = (
    "pytorch_lora_weights.safetensors",
    "labels.safetensors",  # label conditioning: the label table (labels_conditioning)
    "ip_adapter.safetensors",  # the image-prompt adapter, public IP-Adapter layout
    "classifier.pt",
    "manifest.json",
    "training_report.json",
    "evaluation.json",
    "on_the_fly.json",  # a classifier's on-the-fly images: seeds, prompts, epochs, draws
    "README.md",
    "loss.csv",
    "diversity.csv",
    "loss.svg",
)
# ...and the files under these folders matching these patterns.
ARTIFACT_GLOBS = (
    ("embeddings", "*.safetensors"),
    ("validation", "step-*.png"),
    ("image_encoder", "*.json"),  # the image prompt's encoder config (its weights stay unlisted)
)
FST_NUMERALS = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI"}


def artifact_files(artifacts_dir: str) -> list[str]:
    """The run's artifact files that exist, as paths relative to its folder ('a/b' form).

    Only these are ever served: a name is looked up in this list, never joined onto the folder
    as given, and a listed file that resolves outside the folder (a link) is left out. A run
    without a folder has none (an empty path would be the server's working directory).
    """
    if not artifacts_dir.strip():
        return []
    if artifacts.is_remote():  # what the run's manifest lists; nothing is fetched to list it
        return [rel for rel in artifacts.manifest_files(artifacts_dir) or [] if _listed(rel)]
    run_dir = artifacts.local_folder(artifacts_dir)
    found = [run_dir / n for n in ARTIFACT_NAMES]
    for folder, pattern in ARTIFACT_GLOBS:
        found += sorted((run_dir / folder).glob(pattern))
    root = run_dir.resolve()
    return [
        p.relative_to(run_dir).as_posix()
        for p in found
        if p.is_file() and p.resolve().is_relative_to(root)
    ]


def _listed(rel: str) -> bool:
    if rel in ARTIFACT_NAMES:
        return True
    folder, _, name = rel.partition("/")
    return any(
        folder == f and "/" not in name and fnmatch.fnmatchcase(name, pattern)
        for f, pattern in ARTIFACT_GLOBS
    )


def artifact_links(run: Run) -> list[dict[str, str]]:
    return [
        {"name": name, "url": reverse("training:artifact", args=[run.pk, name])}
        for name in artifact_files(run.artifacts_dir)
    ]


def loss_chart(run_dir: Path) -> dict[str, Any] | None:
    """The loss by step with labelled axes (None before the first step)."""
    history = [(step, loss) for step, loss, _ in read_loss_log(run_dir / "loss.csv")]
    return line_chart(history, x_title="training step", y_title="loss")


PARAMETER_ROWS = (("lora", "LoRA"), ("embeddings", "Token embeddings"), ("total", "Total"))


def trainable_parameters(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the training report's ``trainable_parameters`` ({"lora", "embeddings",
    "total"}), counts with thousands separators; [] when it has none."""
    counts = report.get("trainable_parameters")
    if not isinstance(counts, dict):
        return []
    return [
        {"label": label, "count": f"{counts[key]:,}", "total": key == "total"}
        for key, label in PARAMETER_ROWS
        if isinstance(counts.get(key), int) and not isinstance(counts.get(key), bool)
    ]


def _interval(ci: Any) -> list[float] | None:
    return ci if isinstance(ci, list) and len(ci) == 2 else None


GROUP_ORDER = ("I–II", "III–IV", "V–VI")


def _group_order(key: str) -> tuple[int, str]:
    """Skin types 1-6, then the groups lightest first, then anything else."""
    if key.isdigit():
        return int(key), ""
    return (10 + GROUP_ORDER.index(key) if key in GROUP_ORDER else 99), key


def per_skin_type(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The classifier's held-out evaluation per Fitzpatrick type and per FST group: test
    images, accuracy, macro AUROC with its bootstrap interval (None before evaluation)."""
    by_fst = evaluation.get("by_fst") or {}
    by_group = evaluation.get("by_fst_group") or {}
    if not by_fst.get("counts_by_group"):
        return None

    def rows(report: dict[str, Any], label) -> list[dict[str, Any]]:
        counts = report.get("counts_by_group") or {}
        ci = (report.get("ci") or {}).get("auroc_by_group") or {}
        return [
            {
                "label": label(key),
                "n": counts[key],
                "accuracy": (report.get("accuracy_by_group") or {}).get(key),
                "auroc": (report.get("auroc_by_group") or {}).get(key),
                "ci": _interval(ci.get(key)),
            }
            for key in sorted(counts, key=_group_order)
        ]

    return {
        "fst": rows(by_fst, lambda k: f"FST {FST_NUMERALS.get(k, k)}"),
        "groups": rows(by_group, lambda k: f"FST {k}"),
        "notes": [*by_fst.get("notes", []), *by_group.get("notes", [])],
    }


def next_steps(run: Run, user: Any) -> list[dict[str, str]]:
    """Links to what a finished run leads on to, for a user allowed to launch it: a LoRA run
    on a textual inversion, a batch with a LoRA or joint model (and a joint run on a LoRA),
    a hard-example batch planned from a classifier's validation errors."""
    if not run_is_finished(run=run):
        return []
    steps = []
    launch_run = reverse("admin:training_run_launch")
    if run.kind == RunKind.TEXTUAL_INVERSION and user.has_perm("training.launch_run"):
        steps.append(
            {
                "label": "Launch a LoRA run on this",
                "url": f"{launch_run}?{urlencode({'kind': 'lora', 'parent': run.pk})}",
            }
        )
    if run.kind in (RunKind.LORA, RunKind.JOINT) and user.has_perm("generation.launch_batch"):
        batch = reverse("admin:generation_batch_launch")
        steps.append(
            {
                "label": "Generate a batch with this model",
                "url": f"{batch}?{urlencode({'model_run': run.pk})}",
            }
        )
    if run.kind == RunKind.CLASSIFIER and user.has_perm("generation.launch_batch"):
        steps.append(
            {
                "label": "Generate hard examples",
                "url": reverse("generation:hard_examples", args=[run.pk]),
            }
        )
    if run.kind == RunKind.LORA and user.has_perm("training.launch_run"):
        steps.append(
            {
                "label": "Refine it jointly (joint run)",
                "url": f"{launch_run}?{urlencode({'kind': 'joint', 'parent': run.pk})}",
            }
        )
    return steps


def on_the_fly(run: Run) -> dict[str, Any] | None:
    """What a classifier's page says about its on-the-fly images: the summary once it has
    finished, the count so far while it trains; None for a run without them."""
    if run.kind != RunKind.CLASSIFIER or not run.uses_on_the_fly:
        return None
    config = run.config
    out: dict[str, Any] = {
        "model_run": config.get("on_the_fly_model"),
        "share_percent": round(100 * float(config.get("on_the_fly_share", 0))),
        "per_epoch": config.get("on_the_fly_per_epoch"),
        "cache": config.get("on_the_fly_cache"),
        "summary": (run.evaluation or {}).get("on_the_fly"),
        "so_far": 0,
    }
    if out["summary"]:
        out["strata"] = [
            {
                "diagnosis": key.split("|")[0],
                "fst": FST_NUMERALS.get(key.split("|")[1], key.split("|")[1]),
                **counts,
            }
            for key, counts in out["summary"].get("by_stratum", {}).items()
        ]
    else:
        path = run_file(run, "on_the_fly.json")
        out["so_far"] = _records_so_far(path) if path is not None else 0
    return out


def _records_so_far(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()).get("images", []))
    except (OSError, ValueError):  # not written yet, or being replaced
        return 0
