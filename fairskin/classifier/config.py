"""Classifier-run settings (no torch import: the web app validates them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fairskin.config_types import type_problems

# Share of synthetic images per Fitzpatrick type in the training mixture.
DEFAULT_SYNTHETIC_SHARES = {1: 0.2, 2: 0.2, 3: 0.3, 4: 0.5, 5: 0.7, 6: 0.8}


class ClassifierConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "resnet50"
    weights: str | None = None  # a local ImageNet checkpoint; else torch's cache; else random
    image_size: int = 224
    batch_size: int = 32
    pretrain_epochs: int = 0
    epochs: int = 10
    dann_epochs: int = 0
    dann_strength: float = 0.1
    learning_rate: float = 1e-4
    final_learning_rate: float = 1e-5
    synthetic_shares: dict[int, float] = field(
        default_factory=lambda: dict(DEFAULT_SYNTHETIC_SHARES)
    )
    ramp_epochs: int = 0
    mixed_precision: str = "no"
    bootstrap: int = 500
    seed: int = 0

    @classmethod
    def build(cls, overrides: dict[str, Any] | None = None) -> ClassifierConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides or {}) - known
        if unknown:
            raise ClassifierConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values = dict(overrides or {})
        problems = type_problems(cls, values)
        if problems:
            raise ClassifierConfigError("; ".join(problems))
        if "synthetic_shares" in values:
            try:
                values["synthetic_shares"] = {
                    int(k): float(v) for k, v in values["synthetic_shares"].items()
                }
            except ValueError as exc:
                raise ClassifierConfigError(
                    "synthetic_shares maps skin types 1-6 to shares in "
                    f"[0, 1], got {values['synthetic_shares']!r}"
                ) from exc
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["synthetic_shares"] = {str(k): v for k, v in self.synthetic_shares.items()}
        return data

    def validate(self) -> None:
        problems = []
        for name in ("image_size", "batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                problems.append(f"{name} must be a positive whole number")
        for name in ("pretrain_epochs", "dann_epochs", "ramp_epochs", "bootstrap"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} must be a whole number >= 0")
        if not self.learning_rate > 0 or not self.final_learning_rate > 0:
            problems.append("learning rates must be positive")
        if self.arch not in ("resnet50", "resnet18"):
            problems.append("arch must be resnet50 (or resnet18 for quick checks)")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append("mixed_precision must be no, fp16 or bf16")
        shares = self.synthetic_shares
        if set(shares) - set(range(1, 7)) or any(not 0 <= v <= 1 for v in shares.values()):
            problems.append("synthetic_shares maps skin types 1-6 to shares in [0, 1]")
        if problems:
            raise ClassifierConfigError("; ".join(problems))
