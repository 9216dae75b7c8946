"""The quality filter's settings: thresholds and which uncalibrated checks may reject.

Torch-free, so the web process validates a batch's settings without loading any network.
The distance checks (LPIPS to real images, memorization, per-image FID) default to a threshold
calibrated on held-out real images at the batch's filter percentile
(`fairskin.generation.calibration`); the classifier confidence keeps the planning document's
absolute 0.6. Any threshold can be given as an absolute number, as
{"mode": "calibrated", "percentile": p}, or as {"mode": "relative", "percentile": p} (a
percentile of the reference's own real-vs-real values).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from fairskin.generation.checks import THRESHOLD_MODES, Threshold
from fairskin.generation.spec import SPEC

CHECK_NAMES = (
    "resolution",
    "brightness",
    "lpips_real",
    "memorization",
    "confidence",
    "fid",
    "duplicate",
)
THRESHOLD_CHECKS = ("lpips_real", "memorization", "confidence", "fid")
# (lowest, highest) allowed absolute value; None is unbounded.
THRESHOLD_BOUNDS = {
    "lpips_real": (0.0, None),
    "memorization": (0.0, None),
    "confidence": (0.0, 1.0),
    "fid": (0.0, None),
}
HIGHER_IS_WORSE = {"lpips_real": True, "memorization": False, "confidence": False, "fid": True}
# The planning document's absolute values, kept as the explicit alternative (e.g. {"fid": 30}).
PLANNING_VALUES = {"lpips_real": 0.2, "memorization": 0.1, "confidence": 0.6, "fid": 30.0}
_CALIBRATED = Threshold(None, "calibrated", SPEC.filter_percentile.default)


# --- configuration -----------------------------------------------------------------------------


class ScoringConfigError(ValueError):
    """Scoring settings that cannot be used; the message names every problem."""


@dataclass(frozen=True)
class ScoringConfig:
    brightness_low: float = 0.1
    brightness_high: float = 0.9
    lpips_real: Threshold = _CALIBRATED  # mean LPIPS to same-FST real images, at most
    memorization: Threshold = _CALIBRATED  # nearest-training-image LPIPS, at least
    confidence: Threshold = Threshold(0.6)  # classifier probability of the intended class
    fid: Threshold = _CALIBRATED  # per-image distance to the same-FST real Gaussian, at most
    duplicate_cosine: float = 0.95
    apply_uncalibrated: tuple[str, ...] = ()
    memorization_neighbours: int = 5
    lpips_reference_images: int = 10

    @classmethod
    def build(
        cls, data: dict[str, Any] | None = None, *, percentile: float | None = None
    ) -> ScoringConfig:
        """Settings from ``data``; ``percentile`` (the batch's filter percentile, validated by
        the generation spec) is the percentile of every calibrated threshold that names none."""
        if percentile is None:
            percentile = SPEC.filter_percentile.default
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ScoringConfigError(
                f"scoring settings must be an object of name: value, got {type(data).__name__}"
            )
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        problems = (
            [f"unknown scoring setting(s): {', '.join(map(str, unknown))}"] if unknown else []
        )
        values: dict[str, Any] = {}
        for name in ("brightness_low", "brightness_high"):
            if name in data:
                values[name] = _number_in(name, data[name], 0.0, 1.0, problems)
        values.update(_thresholds(cls, data, percentile, problems))
        if "duplicate_cosine" in data:
            value = _number_in("duplicate_cosine", data["duplicate_cosine"], 0.0, 1.0, problems)
            if value == 0.0:
                problems.append("duplicate_cosine must be in (0, 1], got 0")
            values["duplicate_cosine"] = value
        if "apply_uncalibrated" in data:
            values["apply_uncalibrated"] = _check_names(data["apply_uncalibrated"], problems)
        for name in ("memorization_neighbours", "lpips_reference_images"):
            if name in data:
                raw = data[name]
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                    problems.append(f"{name} must be a whole number >= 1, got {raw!r}")
                values[name] = raw
        low = values.get("brightness_low", cls.brightness_low)
        high = values.get("brightness_high", cls.brightness_high)
        if _is_number(low) and _is_number(high) and not low < high:
            problems.append(f"brightness_low ({low}) must be below brightness_high ({high})")
        if problems:
            raise ScoringConfigError("; ".join(problems))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in THRESHOLD_CHECKS:
            threshold = getattr(self, name)
            data[name] = {
                "value": threshold.value,
                "mode": threshold.mode,
                "percentile": threshold.percentile,
            }
        data["apply_uncalibrated"] = list(self.apply_uncalibrated)
        return data


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_in(
    name: str, raw: object, low: float, high: float | None, problems: list[str]
) -> float | None:
    if not _is_number(raw):
        problems.append(f"{name} must be a number, got {raw!r}")
        return None
    if raw < low or (high is not None and raw > high):
        span = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        problems.append(f"{name} must be {'in ' if high is not None else ''}{span}, got {raw!r}")
    return float(raw)


def _thresholds(
    cls: type[ScoringConfig], data: dict[str, Any], percentile: float, problems: list[str]
) -> dict[str, Threshold | None]:
    """Every threshold check's threshold: as given, else its default, a calibrated default
    taking the batch's percentile."""
    out: dict[str, Threshold | None] = {}
    for name in THRESHOLD_CHECKS:
        default = getattr(cls, name)
        if default.mode == "calibrated":
            default = Threshold(None, "calibrated", float(percentile))
        out[name] = (
            _threshold_from(name, data[name], default, problems) if name in data else default
        )
    return out


def _threshold_from(
    name: str, raw: object, default: Threshold, problems: list[str]
) -> Threshold | None:
    """A threshold from a number (absolute) or {"value", "mode", "percentile"}."""
    if isinstance(raw, Threshold):
        raw = dataclasses.asdict(raw)
    if _is_number(raw):
        raw = {"value": raw}
    if not isinstance(raw, dict):
        problems.append(
            f"{name} must be a number or an object with value, mode and percentile, got {raw!r}"
        )
        return None
    unknown = sorted(set(raw) - {"value", "mode", "percentile"}, key=str)
    if unknown:
        problems.append(
            f"{name}: unknown key(s) {', '.join(map(str, unknown))} (use value, mode, percentile)"
        )
        return None
    mode = raw.get("mode", "absolute")
    if mode not in THRESHOLD_MODES:
        problems.append(
            f"{name}: unknown threshold mode {mode!r} (use {', '.join(THRESHOLD_MODES)})"
        )
        return None
    percentile = raw.get("percentile")
    if percentile is None:
        percentile = default.percentile
    if not _is_number(percentile) or not 0 < percentile <= 100:
        problems.append(f"{name}: percentile must be in (0, 100], got {percentile!r}")
        return None
    if mode != "absolute":
        # The limit comes from real images' values; a stored value (older batches) is unused.
        return Threshold(None, mode, float(percentile))
    if raw.get("value") is None:
        problems.append(f"{name}: an absolute threshold needs a value")
        return None
    low, high = THRESHOLD_BOUNDS[name]
    value = _number_in(name, raw["value"], low, high, problems)
    return None if value is None else Threshold(value, mode, float(percentile))


def _check_names(raw: object, problems: list[str]) -> tuple[str, ...]:
    if (
        isinstance(raw, str)
        or not isinstance(raw, list | tuple)
        or not all(isinstance(name, str) for name in raw)
    ):
        problems.append(f"apply_uncalibrated must be a list of check names, got {raw!r}")
        return ()
    unknown = [name for name in raw if name not in CHECK_NAMES]
    if unknown:
        problems.append(
            f"apply_uncalibrated: unknown check(s) {', '.join(unknown)} (known: "
            f"{', '.join(CHECK_NAMES)})"
        )
    return tuple(dict.fromkeys(raw))
