"""Reports on runs for their pages. (The fairness comparison of classifier runs is in
`training.fairness_verdicts`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairskin.diffusion.reports import read_training_report
from jobs import artifacts
from training.models import Run

# What a run's page reads from its folder (fetched from the store on a web host; a run that
# is still training publishes them as it goes).
PAGE_FILES = (
    "loss.csv",
    "training_report.json",
    "manifest.json",
    "on_the_fly.json",
)


def _page_file(rel: str) -> bool:
    return rel in PAGE_FILES or (rel.startswith("validation/") and rel.endswith(".png"))


def page_folder(run: Run) -> Path | None:
    """The run's folder on this host with the files its page shows (None: nothing yet)."""
    return artifacts.read_folder(run.artifacts_dir, _page_file)


def run_file(run: Run, name: str) -> Path | None:
    """One file of a run's folder on this host (fetched from the store), or None."""
    folder = artifacts.read_folder(run.artifacts_dir, lambda rel: rel == name)
    return folder / name if folder is not None else None


def training_report(run: Run) -> dict[str, Any]:
    """A diffusion run's training report, for its page: ``trainable_parameters``
    ({"lora", "embeddings", "total"}) from when training starts, then the manifest's values
    (config, tokens, final_loss, ...) once it ends; {} when its folder holds neither."""
    if not run.artifacts_dir or run.kind == "classifier":
        return {}
    folder = page_folder(run)
    return read_training_report(folder) if folder is not None else {}
