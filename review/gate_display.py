"""The stored gate report of a closed study as a lead reads it: what fails and why first, charts
of the ratings (inline SVG geometry from fairskin.charts), and the full statistics as table rows
with raters named and counts as integers. Reads version-1 and version-2 reports alike; nothing
here judges anything, it only lays out what the report (and the stored ratings) say."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fairskin.charts import Slots, ValueAxis

SCORES = range(1, 8)
ORIGIN_COLOURS = {"synthetic": "#7a4b2a", "real": "#4363d8"}

GATE_LABELS = [
    ("mean", "(a) mean rating of synthetic images"),
    ("median_share", "(b) share of synthetic images with median ≥ 4"),
    ("low_share", "(c) share of synthetic images with a rating below 3"),
]

SIGNAL_LABELS = {
    "bytes": "file length (bytes)",
    "payload_bytes": "image payload length",
    "blockiness": "JPEG blockiness",
    "double_compression": "double compression",
    "sharpness": "sharpness",
    "high_frequency": "high-frequency energy",
}


def as_int(value: Any) -> Any:
    """A count as an integer (a stored 12.0 reads 12); anything else as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def criterion_rows(
    gate: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per criterion of the gate (a)-(f) and (a) per skin type, as the report judged it;
    unfinished raters by username (``names``: rater id -> username) where the report has ids."""
    rows = [
        {"key": key, "label": label, **gate[key]}
        for key, label in GATE_LABELS
        if isinstance(gate.get(key), Mapping)
    ]
    finished = gate.get("raters_finished")
    if finished:
        unfinished = finished.get("unfinished_names") or finished.get("unfinished") or []
        rows.append(
            {
                "key": "raters_finished",
                "label": "(d) every rater finished",
                "estimate": as_int(finished["n_finished"]),
                "judged": as_int(finished["n_finished"]),
                "integer": True,
                "comparison": "=",
                "limit": as_int(finished["n_raters"]),
                "passed": finished["passed"],
                "why": ", ".join(_name(names or {}, u) for u in unfinished),
            }
        )
    per_fst = gate.get("mean_per_fst")
    if per_fst:
        for fst, row in sorted(per_fst.get("groups", {}).items()):
            rows.append({"key": f"mean_fst_{fst}", "label": f"(a) within FST {fst}", **row})
    for key, label in (("rater_quality", "(e) rater quality"), ("blinding", "(f) blinding audit")):
        if isinstance(gate.get(key), Mapping):
            part = gate[key]
            why = part.get("why") or "; ".join(part.get("failures") or [])
            rows.append({"key": key, "label": label, "passed": part.get("passed"), "why": why})
    return rows


def failing(gate: Mapping[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The criteria that fail, each with its reason: the report's own list (version 2), or for a
    version-1 report, the criteria it marked not met."""
    if isinstance(gate.get("failing"), list):
        return [
            {"label": str(f.get("label") or f.get("criterion")), "reason": str(f.get("reason"))}
            for f in gate["failing"]
        ]
    out = []
    for row in rows:
        if row.get("passed") is False:
            reason = row.get("why") or (
                f"{_fmt(row.get('judged'))} is not {row.get('comparison', '')} "
                f"{_fmt(row.get('limit'))}"
            )
            out.append({"label": row["label"], "reason": str(reason)})
    return out


def _fmt(value: Any) -> str:
    value = as_int(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _name(names: Mapping[str, str], rater: Any) -> str:
    return str(names.get(str(rater), rater))


def histogram(ratings: Iterable[tuple[str, str, int]], names: Mapping[str, str]) -> dict[str, Any]:
    """Share of ratings at each score 1-7, synthetic beside real: pooled and per rater.
    ``ratings`` are (rater id, origin, score) of the scored ratings."""
    counts: dict[str, dict[str, list[int]]] = {}
    for rater, origin, score in ratings:
        for who in ("", str(rater)):
            per_origin = counts.setdefault(who, {o: [0] * 7 for o in ORIGIN_COLOURS})
            if origin in per_origin and 1 <= int(score) <= 7:
                per_origin[origin][int(score) - 1] += 1
    pooled = _histogram_chart(counts.get("", {}), "all raters")
    per_rater = [
        _histogram_chart(c, _name(names, rater), small=True)
        for rater, c in sorted(counts.items(), key=lambda kv: _name(names, kv[0]))
        if rater
    ]
    return {"pooled": pooled, "per_rater": per_rater}


def _histogram_chart(counts: Mapping[str, list[int]], title: str, small: bool = False) -> dict:
    height, bar, gap = (90, 9, 8) if small else (160, 22, 16)
    axis = ValueAxis(low=0, high=1, height=height)
    slots = Slots(width=2 * bar, gap=gap)
    totals = {o: sum(counts.get(o, [])) for o in ORIGIN_COLOURS}
    shares = {
        o: [n / totals[o] if totals[o] else 0.0 for n in counts.get(o, [0] * 7)]
        for o in ORIGIN_COLOURS
    }
    top = max([s for v in shares.values() for s in v] + [0.05])
    axis = ValueAxis(low=0, high=min(1.0, top * 1.15), height=height)
    groups = []
    for i, score in enumerate(SCORES):
        bars = []
        for j, origin in enumerate(ORIGIN_COLOURS):
            share = shares[origin][i]
            bars.append(
                {
                    "x": j * bar,
                    "y": round(axis.y(share), 1),
                    "h": round(axis.length(share), 1),
                    "colour": ORIGIN_COLOURS[origin],
                    "title": f"{origin}, score {score}: {counts.get(origin, [0] * 7)[i]} "
                    f"of {totals[origin]} ({share:.0%})",
                }
            )
        groups.append({"x": slots.x(i), "label": score, "bars": bars})
    return {
        "title": title,
        "groups": groups,
        "width": slots.extent(7),
        "height": height,
        "mid": slots.width / 2,
        "bar": bar,
        "totals": totals,
        "small": small,
        "top_label": f"{axis.high:.0%}",
    }


def skin_type_chart(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Mean synthetic rating per skin type on the 1-7 scale, with the interval the gate uses
    where it judged the skin type (criterion (a) within each type) and the gate's limit."""
    gate = report.get("gate", {})
    by_fst = report.get("breakdown", {}).get("by_fst") or {}
    judged = (gate.get("mean_per_fst") or {}).get("groups", {})
    if not by_fst and not judged:
        return None
    height, width, gap = 160, 56, 34
    axis = ValueAxis(low=1, high=7, height=height)
    slots = Slots(width=width, gap=gap)
    limit = (gate.get("mean") or {}).get("limit")
    entries = [("all types", gate.get("mean") or {})] if gate.get("mean") else []
    shown = {row["group"]: row for row in group_rows(by_fst)}
    for fst in sorted(set(by_fst) | set(judged), key=str):
        entries.append((f"FST {fst}", {**shown.get(fst, {}), **judged.get(fst, {})}))
    columns = []
    for i, (label, row) in enumerate(entries):
        mean = row.get("estimate", row.get("mean"))
        low, high = row.get("ci_low"), row.get("ci_high")
        columns.append(
            {
                "x": slots.x(i),
                "label": label,
                "mean": mean,
                "y": round(axis.y(mean), 1) if mean is not None else None,
                "h": round(axis.length(mean), 1) if mean is not None else None,
                "low_y": round(axis.y(low), 1) if low is not None else None,
                "high_y": round(axis.y(high), 1) if high is not None else None,
                "low": low,
                "high": high,
                "n": as_int(row.get("n_rated_items", row.get("n_items"))),
                "few": row.get("few_items", False),
                "passed": row.get("passed"),
            }
        )
    return {
        "columns": columns,
        "width": slots.extent(len(columns)),
        "height": height,
        "bar": width,
        "mid": width / 2,
        "limit": limit,
        "limit_y": round(axis.y(limit), 1) if limit is not None else None,
        "ticks": [{"value": v, "y": round(axis.y(v), 1)} for v in SCORES],
        "judged": bool(judged),
    }


def flagged_raters(report: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Raters the gate flags: too fast, unfinished, inconsistent on repeats, by username."""
    gate = report.get("gate", {})
    flags: dict[str, list[str]] = {}
    for rater, part in ((gate.get("rater_quality") or {}).get("raters") or {}).items():
        for problem in part.get("problems") or []:
            flags.setdefault(_name(names, rater), []).append(str(problem))
    finished = gate.get("raters_finished") or {}
    for who in finished.get("unfinished_names") or finished.get("unfinished") or []:
        flags.setdefault(_name(names, who), []).append("did not finish")
    return [{"name": n, "problems": p} for n, p in sorted(flags.items())]


def rater_rows(report: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Rater behaviour, one row per rater by name: counts, speed, score use, drift, repeats."""
    quality = ((report.get("gate") or {}).get("rater_quality") or {}).get("raters") or {}
    retest = (report.get("agreement") or {}).get("test_retest") or {}
    by_rater = (report.get("breakdown") or {}).get("by_rater") or {}
    auc = (report.get("synthetic_vs_real") or {}).get("auc_by_rater") or {}
    rows = []
    for rater, row in (report.get("raters") or {}).items():
        counts = row.get("score_counts") or {}
        rows.append(
            {
                "name": _name(names, rater),
                "n_scored": as_int(row.get("n_scored")),
                "n_warmup": as_int(row.get("n_warmup")),
                "n_retest": as_int(row.get("n_retest")),
                "median_seconds": row.get("median_seconds"),
                "too_fast_share": row.get("too_fast_share"),
                "score_counts": [as_int(counts.get(str(s), 0)) for s in SCORES],
                "drift": row.get("drift") or {},
                "mean": (by_rater.get(rater) or {}).get("mean"),
                "auc": (auc.get(rater) or {}).get("value"),
                "retest": retest.get(rater) or {},
                "problems": (quality.get(rater) or {}).get("problems") or [],
                "why": row.get("why"),
            }
        )
    return sorted(rows, key=lambda r: r["name"])


def group_rows(groups: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "group": key,
            **row,
            # Version 2 reports the bounds of each group's mean (shown, not judged).
            "ci_low": (row.get("mean_interval") or {}).get("low"),
            "ci_high": (row.get("mean_interval") or {}).get("high"),
            "n_items": as_int(row.get("n_items")),
            "n_rated_items": as_int(row.get("n_rated_items")),
        }
        for key, row in sorted(groups.items(), key=lambda kv: str(kv[0]))
    ]


def icc_rows(icc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": key, **value}
        for key, value in icc.items()
        if key.startswith("ICC") and isinstance(value, Mapping)
    ]


def audit_display(audit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not audit:
        return None
    signals = [
        {"name": SIGNAL_LABELS.get(name, name), **entry}
        for name, entry in (audit.get("signals") or {}).items()
    ]
    if not signals and audit.get("size_auc"):  # an older audit: the file length only
        signals = [{"name": SIGNAL_LABELS["bytes"], **audit["size_auc"]}]
    n_files = {k: as_int(v) for k, v in (audit.get("n_files") or {}).items()}
    return {**audit, "signal_rows": signals, "n_files": n_files}


def gate_display(
    report: Mapping[str, Any], ratings: Iterable[tuple[str, str, int]] = ()
) -> dict[str, Any]:
    """Everything the study page shows of a stored gate report."""
    gate = report.get("gate") or {}
    names = {str(k): str(v) for k, v in (report.get("rater_names") or {}).items()}
    rows = criterion_rows(gate, names)
    with_caveat = {str(c.get("criterion")) for c in gate.get("caveats") or []}
    for row in rows:
        key = "mean_per_fst" if str(row["key"]).startswith("mean_fst_") else row["key"]
        row["caveat"] = key in with_caveat
    fails = failing(gate, rows)
    counts = report.get("counts") or {}
    histograms = histogram(ratings, names)
    flagged = flagged_raters(report, names)
    problems = {f["name"]: f["problems"] for f in flagged}
    for chart in histograms["per_rater"]:
        chart["problems"] = problems.get(chart["title"], [])
    return {
        "version": (report.get("criteria") or {}).get("version", 1),
        "passed": bool(gate.get("passed")) and not fails,
        "failing": fails,
        "caveats": [
            {"label": str(c.get("label") or c.get("criterion")), "reason": str(c.get("reason"))}
            for c in gate.get("caveats") or []
        ],
        "rows": rows,
        "histograms": histograms,
        "skin_types": skin_type_chart(report),
        "flagged": flagged,
        "raters": rater_rows(report, names),
        "by_fst": group_rows((report.get("breakdown") or {}).get("by_fst") or {}),
        "by_diagnosis": group_rows((report.get("breakdown") or {}).get("by_diagnosis") or {}),
        "by_stratum": group_rows((report.get("breakdown") or {}).get("by_stratum") or {}),
        "icc": icc_rows((report.get("agreement") or {}).get("icc") or {}),
        "audit": audit_display(report.get("blinding_audit")),
        "n_items": {k: as_int(v) for k, v in (counts.get("items") or {}).items()},
        "n_ratings": {k: as_int(v) for k, v in (counts.get("ratings") or {}).items()},
        "n_raters": as_int(counts.get("raters")),
        "scores": list(SCORES),
        "origin_colours": list(ORIGIN_COLOURS.items()),
    }
