"""Hard-example batches: a classifier run's validation errors set a batch's quotas.

The plan itself is the engine's (fairskin.generation.hard_example); this module finds the
classifier's stored validation predictions, the strata the model run can generate, a default
model, and launches the planned batch through `batch_create` with the plan recorded as the
batch's ``origin``. The batch is then an ordinary batch: filtered, studied, gated, released.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairskin.generation.hard_example import (
    HardExampleError,
    HardExamplePlan,
    HardExampleSettings,
    error_table,
    plan_hard_examples,
)
from generation.errors import BatchConfigError
from generation.models import Batch
from generation.selectors import model_runs_usable
from generation.services import batch_create, model_diagnoses
from jobs.artifacts import read_folder
from training.models import Run, RunKind
from training.selectors import run_is_finished, selection_normalise

ORIGIN_KIND = "hard_example"


def classifier_diagnoses(run: Run) -> list[str]:
    """The diagnoses a classifier run was trained and validated on (all seven when its
    selection names none)."""
    chosen = selection_normalise(run.selection)["diagnoses"]
    return list(chosen) or model_diagnoses(run)


def validation_predictions(run: Run) -> dict[str, Any]:
    """A finished classifier run's stored per-image validation predictions, or a refusal
    saying why there are none to plan from."""
    if run.kind != RunKind.CLASSIFIER:
        raise BatchConfigError(
            f"run {run.pk} is a {run.get_kind_display()} run; hard examples are planned from "
            "a classifier run's validation errors"
        )
    if not run_is_finished(run=run):
        raise BatchConfigError(f"classifier run {run.pk} has not finished")
    split = selection_normalise(run.selection)["split"]
    if split != "train":
        raise BatchConfigError(
            f"classifier run {run.pk} trained on the {split or 'unassigned'!r} split, which "
            "holds or may hold the validation images: its validation errors are not "
            "out-of-sample"
        )
    folder = read_folder(run.artifacts_dir, lambda rel: rel == "val_predictions.json")
    path = (folder or Path("/nonexistent")) / "val_predictions.json"
    if not path.is_file():
        raise BatchConfigError(
            f"classifier run {run.pk} stored no validation predictions (val_predictions.json; "
            "runs trained before they were stored, or on datasets without a validation "
            "split, have none): train it again on split datasets"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BatchConfigError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise BatchConfigError(f"{path} is not a predictions record")
    return data


def default_model_run(classifier_run: Run) -> Run | None:
    """The newest finished LoRA or joint run whose diagnoses the classifier was validated on
    (so every stratum it generates has an error rate to follow)."""
    covered = set(classifier_diagnoses(classifier_run))
    for run in model_runs_usable().order_by("-created_at", "-pk")[:50]:
        if set(model_diagnoses(run)) <= covered:
            return run
    return None


def hard_example_plan(
    *,
    classifier_run: Run,
    model_run: Run,
    target: int,
    settings: HardExampleSettings | None = None,
) -> HardExamplePlan:
    """The plan for ``target`` images over the model's diagnoses x FST I-VI, from the
    classifier's validation errors; BatchConfigError with the reason when there is none."""
    predictions = validation_predictions(classifier_run)
    diagnoses = model_diagnoses(model_run)
    outside = sorted(set(diagnoses) - set(classifier_diagnoses(classifier_run)))
    if outside:
        raise BatchConfigError(
            f"model run {model_run.pk} generates {', '.join(outside)}, which classifier run "
            f"{classifier_run.pk} was not validated on; pick a model of its diagnoses"
        )
    try:
        table = error_table(predictions, diagnoses)
        return plan_hard_examples(table, target, settings)
    except HardExampleError as exc:
        raise BatchConfigError(str(exc)) from exc


def hard_example_origin(classifier_run: Run, plan: HardExamplePlan) -> dict[str, Any]:
    return {
        "kind": ORIGIN_KIND,
        "classifier_run": classifier_run.pk,
        "split": "val",
        **plan.to_json(),
    }


def hard_example_batch_create(
    *,
    classifier_run: Run,
    model_run: Run,
    target: int,
    settings: HardExampleSettings | None = None,
    expected_quotas: dict[str, Any] | None = None,
    user: Any = None,
    enqueue: bool = True,
    **options: Any,
) -> Batch:
    """Plan again from the stored predictions and launch. ``expected_quotas``: the quotas the
    user was shown; a launch whose quotas differ (an edited form, or predictions changed
    since) is refused, so a batch always carries the plan its page explained."""
    plan = hard_example_plan(
        classifier_run=classifier_run, model_run=model_run, target=target, settings=settings
    )
    if expected_quotas is not None and expected_quotas != plan.quotas():
        raise BatchConfigError(
            "the quotas sent are not the plan for these settings; nothing was launched "
            "(reload the plan and launch it as shown)"
        )
    return batch_create(
        model_run=model_run,
        target=target,
        quotas=plan.quotas(),
        origin=hard_example_origin(classifier_run, plan),
        user=user,
        enqueue=enqueue,
        **options,
    )
