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
    # On-the-fly generation (fairskin.classifier.on_the_fly): the share of each skin type's
    # synthetic draws taken from images the run generates as it trains, with the model of
    # run ``on_the_fly_model`` (a LoRA or joint run).
    on_the_fly_share: float = 0.0
    on_the_fly_model: int | None = None
    on_the_fly_per_epoch: int = 32  # new images before each epoch
    on_the_fly_cache: int = 128  # most images held; the oldest leave first
    on_the_fly_steps: int = 25
    on_the_fly_guidance: float = 7.5
    on_the_fly_micro_batch: int = 4  # images per device pass (their pixels depend on it)

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
        problems += self._on_the_fly_problems()
        if problems:
            raise ClassifierConfigError("; ".join(problems))

    @property
    def on_the_fly(self) -> bool:
        return self.on_the_fly_share > 0

    def _on_the_fly_problems(self) -> list[str]:
        if not 0 <= self.on_the_fly_share <= 1:
            return ["on_the_fly_share is a share of the synthetic draws, in [0, 1]"]
        if not self.on_the_fly:
            return []
        problems = []
        if not isinstance(self.on_the_fly_model, int) or self.on_the_fly_model <= 0:
            problems.append("on_the_fly_share > 0 needs on_the_fly_model: the run to generate with")
        for name, high in (
            ("on_the_fly_per_epoch", 10_000),
            ("on_the_fly_cache", 100_000),
            ("on_the_fly_steps", 1000),
            ("on_the_fly_micro_batch", 64),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= high:
                problems.append(f"{name} must be a whole number from 1 to {high:,}")
        if self.on_the_fly_cache < self.on_the_fly_per_epoch:
            problems.append(
                "on_the_fly_cache must hold at least on_the_fly_per_epoch images, or new "
                "images would leave before any epoch drew them"
            )
        if not 0 <= self.on_the_fly_guidance <= 50:
            problems.append("on_the_fly_guidance must be from 0 to 50")
        if not any(v > 0 for v in self.synthetic_shares.values()):
            problems.append("every synthetic share is 0, so no on-the-fly image would be drawn")
        return problems
