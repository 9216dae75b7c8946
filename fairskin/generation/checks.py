"""Per-candidate quality checks and their thresholds.

A threshold is absolute (an explicit value), calibrated (a percentile of the same measure on
held-out real images, the default for distance checks: see `fairskin.generation.calibration`)
or relative (a percentile of the reference's own real-vs-real values). A percentile is the
share of real values that pass: the limit is that percentile where higher values are worse and
its complement where lower values are worse. A check whose feature extractor has random
weights is off by default and labelled uncalibrated: it is never applied silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where images are checked, not where thresholds are read
    import torch

THRESHOLD_MODES = ("absolute", "calibrated", "relative")


@dataclass(frozen=True)
class Threshold:
    value: float | None  # absolute mode's limit; None (unused) otherwise
    mode: str = "absolute"  # absolute | calibrated (held-out real images) | relative (reference)
    percentile: float = 95.0  # calibrated and relative: the share (%) of real values that pass

    def resolve(
        self,
        reference: Sequence[float] | np.ndarray | None = None,
        *,
        higher_is_worse: bool = True,
    ) -> float:
        """The limit: the value, or the percentile of ``reference`` (the held-out or the
        real-vs-real values) that lets ``percentile`` % of them pass."""
        if self.mode == "absolute":
            if self.value is None:
                raise ValueError("an absolute threshold needs a value")
            return self.value
        if self.mode not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode {self.mode!r}")
        if reference is None or len(reference) == 0:
            raise ValueError(f"a {self.mode} threshold needs the real images' values")
        share = self.percentile if higher_is_worse else 100.0 - self.percentile
        return float(np.percentile(np.asarray(reference, dtype=float), share))


@dataclass(frozen=True)
class CheckResult:
    name: str
    value: float
    passed: bool
    reason: str = ""
    calibrated: bool = True
    applied: bool = True  # False: measured and stored, but not allowed to reject

    @property
    def rejects(self) -> bool:
        return self.applied and not self.passed


def resolution_check(images: torch.Tensor, expected: int) -> list[CheckResult]:
    h, w = images.shape[-2:]
    ok = (h, w) == (expected, expected)
    return [
        CheckResult(
            "resolution",
            float(min(h, w)),
            ok,
            "" if ok else f"resolution {w}x{h}, expected {expected}x{expected}",
        )
        for _ in range(images.shape[0])
    ]


def brightness_check(
    images: torch.Tensor, low: float = 0.1, high: float = 0.9
) -> list[CheckResult]:
    """Mean Rec. 601 luma in [0, 1]; rejects black, washed-out and blank images."""
    import torch

    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    luma = (images.float() * weights).sum(dim=1).mean(dim=(1, 2))
    out = []
    for value in luma.tolist():
        ok = low <= value <= high
        reason = "" if ok else f"brightness {value:.3f} outside [{low}, {high}]"
        out.append(CheckResult("brightness", value, ok, reason))
    return out


def threshold_check(
    name: str,
    values: Sequence[float],
    threshold: Threshold,
    *,
    higher_is_worse: bool,
    calibrated: bool,
    enabled: bool | None = None,
    reference: Sequence[float] | np.ndarray | None = None,
) -> list[CheckResult]:
    """A measured value against its threshold. Uncalibrated measures are recorded but do not
    reject unless explicitly enabled."""
    limit = threshold.resolve(reference, higher_is_worse=higher_is_worse)
    applied = calibrated if enabled is None else enabled
    out = []
    for value in values:
        ok = value <= limit if higher_is_worse else value >= limit
        reason = (
            ""
            if ok
            else (
                f"{name} {value:.3f} {'>' if higher_is_worse else '<'} "
                f"{limit:.3f}" + ("" if calibrated else " (uncalibrated)")
            )
        )
        out.append(CheckResult(name, float(value), ok, reason, calibrated, applied))
    return out


def failed_reasons(results: Sequence[CheckResult]) -> tuple[str, ...]:
    return tuple(r.reason for r in results if r.rejects)
