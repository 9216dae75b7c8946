"""The fairness comparison of classifier runs: a baseline against candidates, on one test set.

Each candidate is compared with the baseline by a paired bootstrap over the test images both
runs were evaluated on (`fairskin.classifier.paired`), and each success criterion of the
planning document reads *met* (the whole 95% paired interval lies beyond its threshold), *not
met* (the whole interval lies on the other side) or *not shown* (otherwise), with the interval
and the reason in words. Runs evaluated on different test images (or labels) are refused, not
compared. The side-by-side figures say which classes they average, and are marked when two
runs' figures average different classes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.core.cache import cache

from fairskin.classifier.fairness import fst_group
from fairskin.classifier.paired import CRITERIA as PAIRED_CRITERIA
from fairskin.classifier.paired import (
    MIN_GROUP_IMAGES,
    MismatchedTestSets,
    Predictions,
    paired_comparison,
)
from training.models import Run
from training.reports import run_file

GROUPS = ("I–II", "III–IV", "V–VI")
DARK = "V–VI"
REPLICATES = 2000
SEED = 0
PAIRED_VERSION = 2  # bump when paired_comparison's output changes: cached results go stale
PAIRED_CACHE_SECONDS = 7 * 24 * 3600
GAP_REDUCTION_EXPECTED_MAX = 0.60  # the planning document expected 40-60 %
THRESHOLDS = {c.key: c.threshold for c in PAIRED_CRITERIA}  # gap 0.40, eod 0.30, dark 0
CRITERIA = {
    "gap": "AUROC gap across skin-type groups reduced by more than 40 %",
    "eod": "Equalized-odds difference reduced by more than 30 %",
    "dark": "AUROC for FST V–VI above the baseline's",
}
FIGURE_NAMES = {"gap": "gap", "eod": "equalized odds", "dark": "AUROC V–VI"}
DEFINITIONS = {
    "auroc": "macro one-vs-rest AUROC over the classes the test set holds (auroc_classes)",
    "auroc_by_group": "per skin-type group (I–II, III–IV, V–VI): macro one-vs-rest AUROC over "
    "the classes every group holds (auroc_by_group_classes), so the groups' figures average "
    "the same classes",
    "auroc_gap": "max - min of the per-group AUROCs",
    "equalized_odds_difference": "for each class, the decision 'predicted class (argmax) is "
    "c' against 'true class is c': the larger of the TPR spread and the FPR spread (max - min "
    "across groups); the figure is the largest over classes. Where every group holds the "
    "class this is fairlearn's equalized_odds_difference for that binary problem; a group "
    "without images of the class is left out of its TPR spread and named in the notes "
    "(fairlearn would read its TPR as 0)",
    "criteria": "paired bootstrap: 2000 seeded replicates resample the test images within "
    "each skin-type group, both runs scored on the same replicate; met = the whole 95% "
    "interval (2.5th-97.5th percentile) beyond the threshold, not met = the whole interval on "
    "the other side, not shown = otherwise",
    "ci": "per-run bootstrap 95% percentile interval, resampling test images within groups",
}


class PredictionsUnavailable(ValueError):
    """A run's per-image test predictions are not there to compare."""


def predictions_digest(run: Run) -> str:
    """The sha256 of a run's predictions file ("" when it has none or it cannot be read)."""
    ref = run.evaluation.get("test_predictions") or {}
    path = run_file(run, Path(str(ref.get("file", ""))).name) or Path("/nonexistent")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if ref else ""
    except OSError:
        return ""


def load_predictions(run: Run) -> tuple[Predictions, list[str]]:
    """A run's per-image test predictions (grouped by FST group) and its class names."""
    ref = run.evaluation.get("test_predictions")
    if not ref:
        raise PredictionsUnavailable(
            f"run {run.pk} stores no per-image test predictions (evaluated before paired "
            f"comparisons existed); retrain it to compare"
        )
    name = Path(str(ref.get("file", ""))).name  # inside the folder
    path = run_file(run, name) or Path("/nonexistent") / name
    try:
        data = json.loads(path.read_text())
        groups = [fst_group(f) for f in data["fst"]]
        return Predictions.build(data["ids"], data["labels"], groups, data["proba"]), list(
            data["classes"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PredictionsUnavailable(
            f"run {run.pk}'s test predictions ({path.name}) are missing or unreadable: {exc}"
        ) from exc


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f} %"


def relative_change(r: float) -> str:
    """A relative reduction in words: 0.58 -> "reduced by 58 %", -3 -> "increased by 300 %"."""
    if round(r * 100) == 0:
        return "unchanged"
    return f"reduced by {_pct(r)}" if r > 0 else f"increased by {_pct(r)}"


def relative_interval(low: float, high: float) -> str:
    if low >= 0:
        return f"a {_pct(low)} to {_pct(high)} reduction"
    if high <= 0:
        return f"a {_pct(high)} to {_pct(low)} increase"
    return f"from a {_pct(low)} increase to a {_pct(high)} reduction"


def _judgement(key: str, c: dict[str, Any]) -> str:
    target = "0" if c["kind"] == "gain" else f"the {_pct(c['threshold'])} reduction target"
    why = c.get("why")
    if c["state"] == "met":
        return f"met, the whole interval is above {target}"
    if c["state"] == "not met":
        return f"not met, the whole interval is at or below {target}"
    if why == "straddles":
        return f"not shown, the interval spans {target}, so this test set cannot tell"
    if why == "too_few_images":
        return (
            f"not shown, a skin-type group has fewer than {MIN_GROUP_IMAGES} test images, too "
            "few for the interval to be trusted"
        )
    if why == "undefined_in_replicates":
        return (
            f"not shown, the {FIGURE_NAMES[key]} is undefined in "
            f"{_pct(c['undefined_share'])} of resamples"
        )
    return f"not shown, the {FIGURE_NAMES[key]} is undefined for one of the runs"


def criterion_text(key: str, c: dict[str, Any]) -> str:
    """E.g. "gap 0.120 → 0.050, reduced by 58 % (95 % paired interval: a 31 % to 79 %
    reduction): met, the whole interval is above the 40 % reduction target"."""
    base, cand, change, interval = c["baseline"], c["candidate"], c["change"], c["interval"]
    figures = f"{FIGURE_NAMES[key]} {_num(base)} → {_num(cand)}"
    if change is None or interval is None:
        return f"{figures}: {_judgement(key, c)}"
    if c["kind"] == "gain":
        said = f"{change:+.3f} (95 % paired interval {interval[0]:+.3f} to {interval[1]:+.3f})"
    else:
        said = f"{relative_change(change)} (95 % paired interval: {relative_interval(*interval)})"
    return f"{figures}, {said}: {_judgement(key, c)}"


def _num(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.3f}"


def criterion_rows(paired: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, name in CRITERIA.items():
        c = paired["criteria"][key]
        notes = []
        if key == "gap" and c["change"] is not None and c["change"] > GAP_REDUCTION_EXPECTED_MAX:
            notes.append("beyond the 60 % the planning document expected")
        rows.append(
            {
                "key": key,
                "name": name,
                "state": c["state"],
                "met": {"met": True, "not met": False}.get(c["state"]),
                "text": criterion_text(key, c),
                "change": c["change"],
                "interval": c["interval"],
                "notes": notes,
            }
        )
    return rows


def _not_shown(reason: str) -> list[dict[str, Any]]:
    return [
        {
            "key": key,
            "name": name,
            "state": "not shown",
            "met": None,
            "text": f"not shown, {reason}",
            "change": None,
            "interval": None,
            "notes": [],
        }
        for key, name in CRITERIA.items()
    ]


def run_summary(run: Run) -> dict[str, Any]:
    groups = run.evaluation.get("by_fst_group", {})
    by_fst = run.evaluation.get("by_fst", {})
    ci = groups.get("ci", {})
    return {
        "run": run,
        "accuracy": by_fst.get("accuracy"),
        "auroc": by_fst.get("auroc"),
        "auroc_classes": by_fst.get("auroc_classes"),
        "auroc_gap": groups.get("auroc_gap"),
        "equalized_odds_difference": groups.get("equalized_odds_difference"),
        "auroc_by_group": {g: groups.get("auroc_by_group", {}).get(g) for g in GROUPS},
        "auroc_by_group_classes": groups.get("auroc_by_group_classes"),
        "classes_by_group": groups.get("classes_by_group", {}),
        "auroc_ci_by_group": {g: ci.get("auroc_by_group", {}).get(g) for g in GROUPS},
        "gap_ci": ci.get("auroc_gap"),
        "eod_ci": ci.get("equalized_odds_difference"),
        "weights_source": run.evaluation.get("weights_source", ""),
        "notes": groups.get("notes", []),
    }


def _comparable(base: dict[str, Any], other: dict[str, Any]) -> str:
    """Why two runs' side-by-side figures are not comparable, or ""."""
    a, b = base["auroc_by_group_classes"], other["auroc_by_group_classes"]
    if a is None or b is None:
        return "classes not recorded (evaluated before classes were reported)"
    if a != b:
        return f"averages other classes ({', '.join(b)}) than the baseline ({', '.join(a)})"
    if base["auroc_classes"] != other["auroc_classes"]:
        return "its macro AUROC averages other classes than the baseline's"
    return ""


def _paired_row(
    baseline: Run,
    base_pred: tuple[Predictions, list[str]] | str,
    run: Run,
) -> dict[str, Any]:
    """criteria, refusal and the paired comparison's facts for one candidate."""
    if isinstance(base_pred, str):
        return {"criteria": _not_shown(base_pred), "refusal": "", "paired": None}
    try:
        cand, cand_classes = load_predictions(run)
        if cand_classes != base_pred[1]:
            raise MismatchedTestSets("the runs name different classes")
        paired = _cached_paired(baseline, run, base_pred[0], cand)
    except PredictionsUnavailable as exc:
        return {"criteria": _not_shown(str(exc)), "refusal": "", "paired": None}
    except MismatchedTestSets as exc:
        refusal = (
            f"Run {run.pk} cannot be compared with baseline run {baseline.pk}: {exc}. A paired "
            f"comparison needs both runs evaluated on the same test images with the same labels."
        )
        return {
            "criteria": _not_shown("refused, the test sets differ"),
            "refusal": refusal,
            "paired": None,
        }
    paired["common_class_names"] = [base_pred[1][c] for c in paired["common_classes"]]
    return {"criteria": criterion_rows(paired), "refusal": "", "paired": paired}


def _cached_paired(baseline: Run, run: Run, base: Predictions, cand: Predictions) -> dict[str, Any]:
    """The paired comparison, computed once per pair of predictions files: it is a pure
    function of the two files and the settings (seconds per candidate at a few thousand test
    images), and a finished run's predictions never change. The key is both files' sha256,
    so a retrained run (a new file) is compared afresh."""
    digests = (predictions_digest(baseline), predictions_digest(run))
    key = None
    if all(digests):
        settings = f"{PAIRED_VERSION}:{REPLICATES}:{SEED}:{DARK}"
        key = "fairness-paired:" + hashlib.sha256(f"{settings}:{digests}".encode()).hexdigest()
        found = cache.get(key)
        if found is not None:
            return dict(found)
    paired = paired_comparison(base, cand, dark=DARK, replicates=REPLICATES, seed=SEED)
    if key is not None:
        cache.set(key, paired, timeout=PAIRED_CACHE_SECONDS)
    return paired


def fairness_comparison(*, baseline: Run, others: list[Run]) -> dict[str, Any]:
    base = run_summary(baseline)
    base_pred: tuple[Predictions, list[str]] | str
    try:
        base_pred = load_predictions(baseline)
    except PredictionsUnavailable as exc:
        base_pred = str(exc)
    rows = []
    for run in others:
        summary = run_summary(run)
        summary["delta"] = {
            key: None if summary[key] is None or base[key] is None else summary[key] - base[key]
            for key in ("accuracy", "auroc", "auroc_gap", "equalized_odds_difference")
        }
        summary["incomparable"] = _comparable(base, summary)
        summary.update(_paired_row(baseline, base_pred, run))
        rows.append(summary)
    base["incomparable"] = _comparable(base, base)  # only "classes not recorded" is possible
    return {
        "baseline": base,
        "runs": rows,
        "groups": GROUPS,
        "replicates": REPLICATES,
        "seed": SEED,
    }


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for CSV/JSON export."""
    out = []
    for role, summary in [("baseline", comparison["baseline"])] + [
        ("candidate", r) for r in comparison["runs"]
    ]:
        row = {
            "role": role,
            "run_id": summary["run"].pk,
            "name": summary["run"].name,
            "uses_synthetic": summary["run"].uses_synthetic,
            "training_data": summary["run"].training_data,
            "on_the_fly_images": (summary["run"].evaluation or {})
            .get("on_the_fly", {})
            .get("images_generated", 0),
            "accuracy": summary["accuracy"],
            "macro_auroc": summary["auroc"],
            "auroc_gap": summary["auroc_gap"],
            "equalized_odds_difference": summary["equalized_odds_difference"],
            "auroc_by_group_classes": " ".join(summary["auroc_by_group_classes"] or []),
            "incomparable": summary["incomparable"],
            "weights": summary["weights_source"],
        }
        for g in GROUPS:
            row[f"auroc_{g}"] = summary["auroc_by_group"][g]
            ci = summary["auroc_ci_by_group"][g]
            row[f"auroc_{g}_ci_low"], row[f"auroc_{g}_ci_high"] = ci if ci else (None, None)
        criteria = {c["key"]: c for c in summary.get("criteria", [])}
        row["refusal"] = summary.get("refusal", "")
        for key in CRITERIA:  # empty for the baseline itself
            c = criteria.get(key, {})
            interval = c.get("interval") or (None, None)
            row[f"{key}_verdict"] = c.get("state")
            row[f"{key}_change"] = c.get("change")
            row[f"{key}_interval_low"], row[f"{key}_interval_high"] = interval
            row[f"{key}_text"] = c.get("text")
        out.append(row)
    return out
