"""Reports on runs for their pages. (The fairness comparison of classifier runs is in
`training.fairness_verdicts`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairskin.diffusion.reports import read_training_report
from training.models import Run


def training_report(run: Run) -> dict[str, Any]:
    """A diffusion run's training report, for its page: ``trainable_parameters``
    ({"lora", "embeddings", "total"}) from when training starts, then the manifest's values
    (config, tokens, final_loss, ...) once it ends; {} when its folder holds neither."""
    if not run.artifacts_dir or run.kind == "classifier":
        return {}
    return read_training_report(Path(run.artifacts_dir))
