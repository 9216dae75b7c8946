"""A generation batch's settings: each one's default and bounds, written once.

The admin launch form takes its initial values and limits from :data:`SPEC`, the ``Batch``
model its field defaults, the ``generate`` command its defaults, and
``generation.services.batch_create`` checks a request against it with
:meth:`GenerationSpec.problems`, the one place where the bounds are enforced. Torch-free and
Django-free, so every one of them can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fairskin.config_types import is_number, is_whole
from fairskin.generation.options import SCHEDULERS

DEFAULT_NEGATIVE_PROMPT = "blurry, low quality, text, watermark, duplicated"
# The planning document's skin-type mix: the darker types are over-represented on purpose.
DEFAULT_FST_DISTRIBUTION: Mapping[int, float] = MappingProxyType(
    {1: 0.10, 2: 0.10, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}
)


@dataclass(frozen=True)
class Whole:
    """A whole-number setting: its default and inclusive bounds."""

    label: str  # how messages name it
    default: int
    low: int
    high: int
    multiple_of: int = 1

    def problem(self, value: object) -> str | None:
        if not is_whole(value) or not isinstance(value, int):
            return f"{self.label} must be a whole number, got {value!r}"
        if self.low <= value <= self.high and value % self.multiple_of == 0:
            return None
        what = f"a multiple of {self.multiple_of} " if self.multiple_of > 1 else ""
        span = (
            f"positive and at most {self.high}"
            if self.low == 1 and not what
            else f"from {self.low} to {self.high}"
        )
        return f"{self.label} must be {what}{span}, got {value!r}"


@dataclass(frozen=True)
class Number:
    """A real-number setting (finite): its default and inclusive bounds; None is unbounded."""

    label: str
    default: float
    low: float
    high: float | None = None
    unit: str = ""  # written after a bound in messages ("at least 1x")

    def problem(self, value: object) -> str | None:
        if not is_number(value) or not isinstance(value, int | float):
            return f"{self.label} must be a number, got {value!r}"
        if value >= self.low and (self.high is None or value <= self.high):
            return None
        if self.high is None:
            return f"{self.label} must be at least {self.low:g}{self.unit}, got {value!r}"
        return (
            f"{self.label} must be from {self.low:g}{self.unit} to {self.high:g}{self.unit}, "
            f"got {value!r}"
        )


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of names."""

    label: str
    default: str
    choices: tuple[str, ...]

    def problem(self, value: object) -> str | None:
        if value in self.choices:
            return None
        return f"unknown {self.label} {value!r} (choose one of {', '.join(self.choices)})"


@dataclass(frozen=True)
class Text:
    """Free text stored in a column of ``max_length`` characters."""

    label: str
    default: str
    max_length: int

    def problem(self, value: object) -> str | None:
        if not isinstance(value, str) or "\x00" in value:
            return f"{self.label} must be text without NUL bytes, got {value!r}"
        if len(value) > self.max_length:
            return f"{self.label} must be at most {self.max_length} characters, not {len(value)}"
        return None


def _default_distribution() -> Mapping[int, float]:
    return DEFAULT_FST_DISTRIBUTION


@dataclass(frozen=True)
class GenerationSpec:
    """Every setting of a batch that has a default or a bound (the planning document's)."""

    target: Whole = Whole("the target", default=60, low=1, high=1_000_000)
    overgeneration: Number = Number("the over-generation cap", default=1.5, low=1, unit="x")
    scheduler: Choice = Choice("scheduler", default="ddim", choices=tuple(SCHEDULERS))
    steps: Whole = Whole("steps", default=50, low=1, high=1000)
    guidance: Number = Number("guidance", default=7.5, low=0, high=50)
    # The model's native side when it can be read from its config files; else this default.
    size: Whole = Whole("the image size", default=512, low=8, high=1024, multiple_of=8)
    seed: Whole = Whole("the seed", default=0, low=0, high=2**32 - 1)
    shard_size: Whole = Whole("the shard size", default=64, low=1, high=10_000)
    # Images per device pass: the fixed micro-batch the pixels depend on.
    device_batch: Whole = Whole("the device batch", default=8, low=1, high=256)
    negative_prompt: Text = Text(
        "the negative prompt", default=DEFAULT_NEGATIVE_PROMPT, max_length=500
    )
    name: Text = Text("the name", default="", max_length=120)
    # The share (%) of held-out real images each calibrated filter threshold lets pass: the
    # default limit of every distance check (fairskin.generation.calibration).
    filter_percentile: Number = Number("the filter percentile", default=95.0, low=50, high=100)
    # img2img from reference images: how far each output moves from its reference. Open at 0:
    # a batch checks it with fairskin.generation.reference_images.check_strength.
    reference_strength: Number = Number("the reference strength", default=0.6, low=0, high=1)
    # How reference images condition a batch: img2img from the reference's pixels, or an
    # image prompt (IP-Adapter: the reference's CLIP image embedding as extra attention tokens)
    # at its own scale (fairskin.diffusion.image_prompt_loader).
    reference_mode: Choice = Choice(
        "reference mode", default="img2img", choices=("img2img", "image_prompt")
    )
    image_prompt_scale: Number = Number("the image prompt scale", default=0.6, low=0, high=2)
    # Class-label guidance (fairskin.diffusion.label_guidance): 0 samples with the null label,
    # i.e. exactly the model without labels; above 0 a third UNet pass per step.
    label_scale: Number = Number("the label guidance scale", default=0.0, low=0, high=20)
    fst_distribution: Mapping[int, float] = field(default_factory=_default_distribution)

    def problems(self, values: Mapping[str, Any]) -> list[str]:
        """One message per value in ``values`` (setting name -> value) of the wrong type or
        outside its bounds, in the order given; empty if every value fits."""
        out = []
        for name, value in values.items():
            setting = getattr(self, name, None)
            if not isinstance(setting, Whole | Number | Choice | Text):
                raise ValueError(f"{name!r} is not a bounded generation setting")
            problem = setting.problem(value)
            if problem is not None:
                out.append(problem)
        return out


SPEC = GenerationSpec()
