"""Training-run configuration: the planning document's defaults, every one overridable."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fairskin.config_types import type_problems
from fairskin.diffusion.lora_targets import (
    DEFAULT_LORA_TARGETS,
    expand_lora_targets,
    lora_target_problems,
)

KINDS = ("textual_inversion", "lora", "joint")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts")
PRECISIONS = ("no", "fp16", "bf16")
TOKEN_MODES = ("compositional", "per_cell")
DIVERSITY_FORMS = ("neg_log_distance", "similarity")  # as fairskin.diffusion.losses
DIVERSITY_GROUPS = ("diagnosis_fst", "diagnosis")
# FairSkin's FST-balanced batches: share of each skin-type group.
DEFAULT_FST_SHARES = {"1-3": 0.4, "4": 0.2, "5-6": 0.4}

_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "textual_inversion": {
        "steps": 2000,
        "learning_rate": 5e-4,
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 100,
    },
    "lora": {
        "steps": 10_000,
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine_with_restarts",
        "lr_num_cycles": 3,
        "lr_warmup_steps": 0,
    },
    "joint": {
        "steps": 3000,
        "learning_rate": 5e-5,
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 100,
    },
}


MAX_PROCESSES = 8  # data-parallel ranks of one run: the plan's largest machine


class ConfigError(ValueError):
    """A run configuration that cannot be trained; the message lists every problem."""


@dataclass(frozen=True)
class TrainConfig:
    kind: str
    steps: int = 2000
    learning_rate: float = 5e-4
    batch_size: int = 4
    grad_accumulation: int = 2
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 100
    lr_num_cycles: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Textual inversion
    token_mode: str = "compositional"  # noqa: S105 (a mode name, not a secret)
    per_cell_min_images: int = 20
    # LoRA
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    # Presets (cross_attention, self_attention, all_attention) or module-name suffixes such as
    # attn2.to_q (`lora_targets`); by default the cross-attention projections, as planned.
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    # Diffusion loss: DDPM epsilon prediction with min-SNR weighting (None turns it off).
    snr_gamma: float | None = 5.0
    # FairSkin resampling
    balanced_sampling: bool = True
    fst_shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FST_SHARES))
    diversity_weight: float = 0.1
    diversity_pool: int = 16
    # The planning document's -log(D + eps) per diagnosis x skin type; "similarity" (1 - D, the
    # form before issue 16) and "diagnosis" grouping are kept as options (losses.DiversityLoss).
    diversity_form: str = "neg_log_distance"
    diversity_eps: float = 1e-3
    diversity_group: str = "diagnosis_fst"
    # Class-label conditioning (LoRA and joint runs; labels_conditioning): learned diagnosis +
    # skin-type vectors added to the UNet's time embedding, dropped to the null label at a rate.
    label_conditioning: bool = False
    label_dropout: float = 0.1
    # The label tables' own AdamW learning rate (a parameter group of their own): they start at
    # zero and must grow to the time embedding's scale (docs/validation/label-conditioning.md).
    label_learning_rate: float = 1e-3
    # Image-prompt adapter (LoRA and joint runs; image_prompt): IP-Adapter style decoupled
    # cross-attention on the training image's CLIP embedding, dropped to zeros at a rate.
    image_prompt: bool = False
    image_prompt_dropout: float = 0.1
    image_prompt_tokens: int = 4  # 4 is what plain diffusers' load_ip_adapter rebuilds
    # Systems
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    cache_latents: bool = False
    resolution: int | None = None  # None: the base model's native size
    checkpoint_every: int = 500
    # Data-parallel ranks (`parallel`, `launch`): the global batch (batch_size) is split evenly
    # over them and the loss curve is the one-process curve. Not part of the settings hash: a
    # run may resume on another number of processes.
    processes: int = 1
    validation_every: int = 500
    validation_inference_steps: int = 20
    seed: int = 0

    @classmethod
    def defaults(cls, kind: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ConfigError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
        values: dict[str, Any] = {
            f.name: (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            for f in dataclasses.fields(cls)
        }
        values.update(kind=kind, **_KIND_DEFAULTS[kind])
        values["lora_targets"] = list(values["lora_targets"])
        return values

    @classmethod
    def build(cls, kind: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Defaults for ``kind`` with ``overrides`` applied, validated (ConfigError)."""
        values = cls.defaults(kind)
        unknown = set(overrides or {}) - set(values)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update(overrides or {})
        problems = type_problems(cls, values)
        if problems:
            raise ConfigError("; ".join(problems))
        values["lora_targets"] = expand_lora_targets(values["lora_targets"])
        values["fst_shares"] = dict(values["fst_shares"])
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        return data

    def validate(self) -> None:
        problems = self._number_problems() + self._choice_problems() + self._image_prompt_problems()
        problems += self._process_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _number_problems(self) -> list[str]:
        problems = []

        def positive(name: str, value: float) -> None:
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not value > 0
                or not math.isfinite(value)
            ):
                problems.append(f"{name} must be a positive number, got {value!r}")

        for name in (
            "steps",
            "batch_size",
            "grad_accumulation",
            "checkpoint_every",
            "validation_every",
            "validation_inference_steps",
            "lora_rank",
            "diversity_pool",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive whole number, got {value!r}")
        positive("learning_rate", self.learning_rate)
        positive("label_learning_rate", self.label_learning_rate)
        positive("lora_alpha", self.lora_alpha)
        positive("max_grad_norm", self.max_grad_norm)
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.weight_decay < 0:
            problems.append("weight_decay must not be negative")
        if self.lr_warmup_steps < 0 or self.lr_num_cycles < 1:
            problems.append("lr_warmup_steps must be >= 0 and lr_num_cycles >= 1")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            problems.append("snr_gamma must be positive, or null to turn min-SNR off")
        if self.diversity_weight < 0:
            problems.append("diversity_weight must not be negative")
        if not 0 < self.diversity_eps <= 0.1:
            problems.append(f"diversity_eps must be in (0, 0.1], got {self.diversity_eps!r}")
        if not 0 <= self.label_dropout < 1:
            problems.append(f"label_dropout must be in [0, 1), got {self.label_dropout!r}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            problems.append("resolution must be a multiple of 8")
        shares = self.fst_shares
        if (
            set(shares) - {"1-3", "4", "5-6"}
            or any(v < 0 for v in shares.values())
            or abs(sum(shares.values()) - 1) > 1e-6
        ):
            problems.append("fst_shares must give groups '1-3', '4', '5-6' shares adding up to 1")
        return problems

    def _choice_problems(self) -> list[str]:
        problems = []
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {', '.join(PRECISIONS)}")
        if self.token_mode not in TOKEN_MODES:
            problems.append(f"token_mode must be one of {', '.join(TOKEN_MODES)}")
        if self.diversity_form not in DIVERSITY_FORMS:
            problems.append(f"diversity_form must be one of {', '.join(DIVERSITY_FORMS)}")
        if self.diversity_group not in DIVERSITY_GROUPS:
            problems.append(f"diversity_group must be one of {', '.join(DIVERSITY_GROUPS)}")
        if self.label_conditioning and self.kind == "textual_inversion":
            problems.append("label_conditioning needs a LoRA or joint run (it trains the UNet)")
        problems += lora_target_problems(self.lora_targets)
        return problems

    def _process_problems(self) -> list[str]:
        n = self.processes
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROCESSES:
            return [f"processes must be a whole number from 1 to {MAX_PROCESSES}, got {n!r}"]
        if isinstance(self.batch_size, int) and self.batch_size % n:
            return [
                f"batch_size {self.batch_size} does not split over {n} processes: each takes an "
                f"equal share of the global batch (use a multiple of {n})"
            ]
        return []

    def _image_prompt_problems(self) -> list[str]:
        problems = []
        if self.image_prompt and self.kind == "textual_inversion":
            problems.append("image_prompt needs a LoRA or joint run (it trains UNet layers)")
        if not 0 <= self.image_prompt_dropout < 1:
            problems.append(
                f"image_prompt_dropout must be in [0, 1), got {self.image_prompt_dropout!r}"
            )
        if not 1 <= self.image_prompt_tokens <= 16:
            problems.append(
                f"image_prompt_tokens must be 1 to 16, got {self.image_prompt_tokens!r}"
            )
        return problems
