"""Geometry of the small charts pages draw as inline SVG (dataset composition, FID per skin
type, AUROC per skin-type group, a run's loss): a linear value axis, evenly spaced bar slots,
round tick values and a line chart with labelled axes.

Coordinates only, in SVG units with y growing downwards; the templates draw them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ValueAxis:
    """A vertical axis ``height`` units tall, ``low`` at the bottom and ``high`` at the top."""

    low: float
    high: float
    height: float

    def length(self, value: float) -> float:
        """How far ``value`` stands above the bottom: a bar's height (not rounded)."""
        return (value - self.low) / (self.high - self.low) * self.height

    def y(self, value: float) -> float:
        """Where ``value`` sits on the axis, measured from the top (not rounded)."""
        return self.height - self.length(value)


@dataclass(frozen=True)
class Slots:
    """Bars (or groups of bars) ``width`` wide, left to right with ``gap`` after each."""

    width: float
    gap: float

    def x(self, index: int) -> float:
        """The left edge of slot ``index``."""
        return index * (self.width + self.gap)

    def mid(self, index: int) -> float:
        """The centre of slot ``index``, where its label goes."""
        return self.x(index) + self.width / 2

    def extent(self, count: int) -> float:
        """The width ``count`` slots take, gaps included."""
        return count * (self.width + self.gap)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 × 10^k) spanning [low, high]:
    the first at or below ``low``, the last at or above ``high``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, got {low!r} and {high!r}")
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    rough = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough * (1 - 1e-9))
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    n = round((last - first) / step)
    return [round(first + i * step, 12) for i in range(n + 1)]


def tick_label(value: float, step: float) -> str:
    """A tick's text with the decimals the tick spacing needs (0.25 -> 2, 0.005 -> 3,
    500 -> 0); thousands get separators (10,000)."""
    decimals = len(f"{abs(step):.10f}".rstrip("0").split(".")[1])
    return f"{value:,.{decimals}f}"


def _bucketed(
    points: Sequence[tuple[float, float]], most: int
) -> tuple[list[tuple[float, float]], int]:
    """At most ``most`` points: means of runs of consecutive points when there are more."""
    if len(points) <= most:
        return list(points), 1
    size = math.ceil(len(points) / most)
    out: list[tuple[float, float]] = []
    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        out.append((sum(p[0] for p in chunk) / len(chunk), sum(p[1] for p in chunk) / len(chunk)))
    return out, size


@dataclass(frozen=True)
class Margins:
    """Room around the plot area for tick labels and axis titles."""

    left: float = 58
    right: float = 14
    top: float = 10
    bottom: float = 44


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    x_title: str,
    y_title: str,
    width: float = 480,
    height: float = 270,
    most: int = 600,
    margins: Margins = Margins(),  # frozen: one shared default is safe
) -> dict[str, Any] | None:
    """A line chart's geometry (None without a finite point): the polyline, ticks with their
    labels on both axes and where the two axis titles go. Over ``most`` points, runs of
    consecutive points are averaged (``averaged`` says how many per plotted point); points
    that are not finite (a diverged loss) are left out and counted in ``dropped``."""
    finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        return None
    plotted, averaged = _bucketed(finite, most)
    xs = [p[0] for p in finite]
    ys = [p[1] for p in finite]
    y_ticks = nice_ticks(min(ys), max(ys))
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    plot_w = width - margins.left - margins.right
    plot_h = height - margins.top - margins.bottom
    y_axis = ValueAxis(low=y_ticks[0], high=y_ticks[-1], height=plot_h)

    def px(x: float) -> float:
        return round(margins.left + (x - x_lo) / (x_hi - x_lo) * plot_w, 1)

    def py(y: float) -> float:
        return round(margins.top + y_axis.y(y), 1)

    y_step = y_ticks[1] - y_ticks[0]
    x_step = x_ticks[1] - x_ticks[0]
    bottom = margins.top + plot_h
    return {
        "width": width,
        "height": height,
        "left": margins.left,
        "right": round(margins.left + plot_w, 1),
        "top": margins.top,
        "bottom": bottom,
        "points": " ".join(f"{px(x)},{py(y)}" for x, y in plotted),
        "x_ticks": [{"x": px(t), "label": tick_label(t, x_step)} for t in x_ticks],
        "y_ticks": [{"y": py(t), "label": tick_label(t, y_step)} for t in y_ticks],
        "x_title": {"text": x_title, "x": round(margins.left + plot_w / 2, 1), "y": height - 6},
        "y_title": {"text": y_title, "x": -round(margins.top + plot_h / 2, 1), "y": 14},
        "tick_label_y": bottom + 17,  # x tick labels' baseline
        "tick_label_x": margins.left - 6,  # y tick labels' right edge
        "tick_end": bottom + 4,  # x tick marks run from the axis down to here
        "averaged": averaged,
        "dropped": len(points) - len(finite),
        "last": {"x": px(xs[-1]), "y": py(ys[-1]), "value": ys[-1], "at": xs[-1]},
    }
