"""Geometry of the small bar charts pages draw as inline SVG (dataset composition, FID per skin
type, AUROC per skin-type group): a linear value axis and evenly spaced bar slots.

Coordinates only, in SVG units with y growing downwards; the templates draw them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
