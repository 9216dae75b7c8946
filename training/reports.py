"""The fairness comparison of classifier runs: baseline vs FairSkin runs, side by side."""

from __future__ import annotations

from typing import Any

from training.models import Run

GROUPS = ("I–II", "III–IV", "V–VI")
# The planning document's success criteria for a FairSkin classifier against its baseline.
GAP_REDUCTION_RANGE = (0.40, 0.60)
EOD_REDUCTION_MIN = 0.30
CRITERIA_NAMES = (
    "AUROC gap reduced by 40–60%",
    "Equalized-odds difference reduced by more than 30%",
    "AUROC gain for FST V–VI",
)


def _reduction(baseline: float | None, value: float | None) -> float | None:
    if baseline is None or value is None or baseline == 0:
        return None
    return (baseline - value) / baseline


def run_summary(run: Run) -> dict[str, Any]:
    groups = run.evaluation.get("by_fst_group", {})
    by_fst = run.evaluation.get("by_fst", {})
    ci = groups.get("ci", {})
    return {
        "run": run,
        "accuracy": by_fst.get("accuracy"),
        "auroc": by_fst.get("auroc"),
        "auroc_gap": groups.get("auroc_gap"),
        "equalized_odds_difference": groups.get("equalized_odds_difference"),
        "auroc_by_group": {g: groups.get("auroc_by_group", {}).get(g) for g in GROUPS},
        "auroc_ci_by_group": {g: ci.get("auroc_by_group", {}).get(g) for g in GROUPS},
        "auroc_by_fst": by_fst.get("auroc_by_group", {}),
        "gap_ci": ci.get("auroc_gap"),
        "eod_ci": ci.get("equalized_odds_difference"),
        "weights_source": run.evaluation.get("weights_source", ""),
        "notes": groups.get("notes", []),
    }


NOISE_NOTE = "may be within sampling noise: the two runs' 95% intervals overlap"


def _overlap(a: list[float] | None, b: list[float] | None) -> bool:
    """Whether two bootstrap intervals overlap (then a difference is not shown to be real)."""
    if not a or not b:
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def _note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def criteria(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[dict[str, Any]]:
    gap_cut = _reduction(baseline["auroc_gap"], candidate["auroc_gap"])
    eod_cut = _reduction(
        baseline["equalized_odds_difference"], candidate["equalized_odds_difference"]
    )
    dark_base = baseline["auroc_by_group"]["V–VI"]
    dark_new = candidate["auroc_by_group"]["V–VI"]
    dark_gain = None if dark_base is None or dark_new is None else dark_new - dark_base
    low, high = GAP_REDUCTION_RANGE
    return [
        {
            "name": CRITERIA_NAMES[0],
            "value": gap_cut,
            "format": "percent",
            "met": None if gap_cut is None else gap_cut >= low,
            "note": _note(
                "beyond the 60% the planning document expected"
                if gap_cut and gap_cut > high
                else "",
                NOISE_NOTE if _overlap(baseline["gap_ci"], candidate["gap_ci"]) else "",
            ),
        },
        {
            "name": CRITERIA_NAMES[1],
            "value": eod_cut,
            "format": "percent",
            "met": None if eod_cut is None else eod_cut > EOD_REDUCTION_MIN,
            "note": NOISE_NOTE if _overlap(baseline["eod_ci"], candidate["eod_ci"]) else "",
        },
        {
            "name": CRITERIA_NAMES[2],
            "value": dark_gain,
            "format": "delta",
            "met": None if dark_gain is None else dark_gain > 0,
            "note": NOISE_NOTE
            if _overlap(
                baseline["auroc_ci_by_group"]["V–VI"], candidate["auroc_ci_by_group"]["V–VI"]
            )
            else "",
        },
    ]


def fairness_comparison(*, baseline: Run, others: list[Run]) -> dict[str, Any]:
    base = run_summary(baseline)
    rows = []
    for run in others:
        summary = run_summary(run)
        summary["delta"] = {
            key: None if summary[key] is None or base[key] is None else summary[key] - base[key]
            for key in ("accuracy", "auroc", "auroc_gap", "equalized_odds_difference")
        }
        summary["criteria"] = criteria(base, summary)
        rows.append(summary)
    return {"baseline": base, "runs": rows, "groups": GROUPS}


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
            "accuracy": summary["accuracy"],
            "macro_auroc": summary["auroc"],
            "auroc_gap": summary["auroc_gap"],
            "equalized_odds_difference": summary["equalized_odds_difference"],
            "weights": summary["weights_source"],
        }
        for g in GROUPS:
            row[f"auroc_{g}"] = summary["auroc_by_group"][g]
            ci = summary["auroc_ci_by_group"][g]
            row[f"auroc_{g}_ci_low"], row[f"auroc_{g}_ci_high"] = ci if ci else (None, None)
        met = {c["name"]: c["met"] for c in summary.get("criteria", [])}
        for name in CRITERIA_NAMES:
            row[name] = met.get(name)  # empty for the baseline itself
        out.append(row)
    return out
