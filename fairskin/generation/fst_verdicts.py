"""Per-skin-type FID verdicts at equal counts, and the chart that draws what they judge.

FID between finite samples of one distribution is far from zero and grows as the samples
shrink, so the raw FID of a skin type with 500 synthetic / 2,000 real images and one with
30 / 40 cannot be read against the same limit (identical distributions scored 1.5 and 31).
Each type is judged instead by its excess FID (`fairskin.metrics.excess_fid`):

* N per type = min(synthetic rows kept, real rows kept // 2): every synthetic image can take
  part and two disjoint real subsets fit;
* figure = median over ``EXCESS_REPEATS`` seeded draws of FID(S, A) - FID(B, A), with S a
  subset of N synthetic rows and A, B disjoint subsets of N real rows; its interval is the
  central ``INTERVAL_LEVEL`` range of the draws;
* the plan's FID limits (20; 25 for FST VI) bound this figure. The excess estimates how much
  farther the synthetic images are from the real ones than other real images are, in FID
  units, so it is the quantity the plan's limit was meant for once the count bias is gone; its
  null value is zero at every N.

Verdict: "not measurable" below ``MIN_EQUAL_N`` images per subset, or when the interval's
half-width exceeds the limit (at that N identical images could land on either side of it);
"not met" when the interval lies wholly at or above the limit, or the median does; "met"
otherwise. A measurable type of identical images therefore passes: its draws fall within
± the limit 95% of the time and the median is steadier than one draw
(docs/validation/fst-verdicts.md has the simulation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairskin.charts import Slots, ValueAxis
from fairskin.labels import fst_roman

FID_LIMIT = 20.0
FID_LIMIT_FST6 = 25.0
FST_RULE_VERSION = 2  # 1 (no "fst_rule" in the report): raw FID at full counts was judged
MIN_EQUAL_N = 20
EXCESS_REPEATS = 50
INTERVAL_LEVEL = 0.95


def fid_limit(fst: int) -> float:
    """The plan's FID limit for one skin type (looser for FST VI, the rarest)."""
    return FID_LIMIT_FST6 if fst == 6 else FID_LIMIT


FST_RULE: dict[str, object] = {
    "version": FST_RULE_VERSION,
    "figure": "excess FID: FID(synthetic, real) - FID(real, other real), same N in all three",
    "n_rule": "N = min(synthetic images kept, real images kept // 2)",
    "min_n": MIN_EQUAL_N,
    "repeats": EXCESS_REPEATS,
    "level": INTERVAL_LEVEL,
    "verdict": (
        "not measurable below the minimum N or when the interval's half-width exceeds the "
        "limit; not met when the interval's lower end or the median is at or above the "
        "limit; met otherwise"
    ),
}


def fst_verdict(excess: Mapping[str, Any] | None, limit: float) -> tuple[str, str]:
    """(status, why) of one skin type's excess FID against its limit (calibrated features)."""
    if excess is None or excess["n"] < MIN_EQUAL_N:
        n = 0 if excess is None else excess["n"]
        return "not measurable", (
            f"N = {n} per subset, below {MIN_EQUAL_N} (needs {MIN_EQUAL_N} synthetic and "
            f"{2 * MIN_EQUAL_N} real images of this type)"
        )
    low, high, median = excess["low"], excess["high"], excess["median"]
    if low >= limit:
        return "not met", "the whole interval is above the limit"
    half_width = (high - low) / 2
    if half_width > limit:
        return "not measurable", (
            f"at N = {excess['n']} the interval is ±{half_width:.1f} wide, more than the limit: "
            "identical images could land on either side of it"
        )
    return ("met", "") if median < limit else ("not met", "")


def fst_chart(report: Mapping[str, Any], *, height: float = 150) -> dict[str, Any] | None:
    """The per-type chart: each type's judged figure (median excess FID) with its interval and
    limit, and its status; None for reports stored before the equal-N rule (format 1)."""
    if (report.get("fst_rule") or {}).get("version") != FST_RULE_VERSION:
        return None
    bars = [
        IntervalBar(
            label=fst_roman(row["fst"]),
            value=row["figure"],
            low=row["excess"]["low"] if row["excess"] else None,
            high=row["excess"]["high"] if row["excess"] else None,
            limit=row["limit"],
            status=row["status"],
        )
        for row in report.get("fst", [])
        if 1 <= row["fst"] <= 6
    ]
    return interval_bar_chart(bars, height=height) if bars else None


@dataclass(frozen=True)
class IntervalBar:
    """One bar of a judged figure: its value, interval, limit and the verdict on it."""

    label: str
    value: float | None  # None: nothing to draw (the slot shows only its label and status)
    low: float | None
    high: float | None
    limit: float
    status: str


def interval_bar_chart(
    bars: list[IntervalBar], *, height: float = 150, width: float = 34, gap: float = 16
) -> dict[str, object]:
    """Bars from zero to each value (downwards for negative ones), a whisker over its interval
    and a dashed line at its limit, on one axis that holds zero, every limit and every interval.

    The values drawn are the values given, unrounded in ``value``: a page shows the same figure
    its verdict judged.
    """
    if not bars:
        raise ValueError("a chart needs at least one bar")
    points = [0.0] + [b.limit for b in bars]
    for b in bars:
        points += [v for v in (b.value, b.low, b.high) if v is not None]
    low, high = min(points), max(points)
    span = high - low or 1.0
    axis = ValueAxis(low=low - 0.05 * span, high=high + 0.1 * span, height=height)
    slots = Slots(width=width, gap=gap)
    zero = axis.y(0.0)
    drawn = []
    for i, bar in enumerate(bars):
        top = zero if bar.value is None else axis.y(bar.value)
        drawn.append(
            {
                "label": bar.label,
                "value": bar.value,
                "low": bar.low,
                "high": bar.high,
                "limit": bar.limit,
                "status": bar.status,
                "x": slots.x(i),
                "mid": slots.mid(i),
                "y": round(min(top, zero), 1),
                "h": round(abs(zero - top), 1),
                "whisker": None
                if bar.low is None or bar.high is None
                else {"y1": round(axis.y(bar.high), 1), "y2": round(axis.y(bar.low), 1)},
                "limit_y": round(axis.y(bar.limit), 1),
                # The value's label sits just above the bar and its whisker.
                "value_y": round(min(top, zero, axis.y(bar.high or 0.0)) - 3, 1),
            }
        )
    return {
        "bars": drawn,
        "bar": slots.width,
        "height": height,
        "width": slots.extent(len(bars)),
        "zero_y": round(zero, 1),
    }
