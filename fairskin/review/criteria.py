"""The gate's criteria: when the synthetic images of a blinded review count as realistic, and
(from version 2) when the panel and the blinding can be trusted to say so."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fairskin.review.study import SCORES, is_int, is_number

# Version 1: criteria (a)-(d), intervals from a two-level bootstrap over raters and images.
# Version 2: the estimand is this panel's judgement (raters fixed, images a sample): exact
# (Clopper-Pearson) bounds for the shares (b) and (c), a t-bound on the image-level ratio
# estimator for the mean (a); rater quality (e) and the blinding audit (f) are criteria too.
CURRENT_VERSION = 2
VERSIONS = (1, 2)


@dataclass(frozen=True)
class GateCriteria:
    """When the synthetic images count as realistic. Defaults are the planning document's.

    (a) the mean of all scored ratings of synthetic images is greater than `mean_min`;
    (b) more than `median_share_min` of synthetic images have a median rating >= `median_at_least`;
    (c) fewer than `low_share_max` of synthetic images got at least one rating below `low_below`;
    (d) every rater finished their scored items.
    With `use_interval`, (a) and (b) are judged on the lower bound and (c) on the upper bound of
    the 95% interval (each bound one-sided 97.5%). With `per_fst`, (a) must also hold within
    each skin type. Version 2 adds:
    (e) rater quality: no rater has more than `too_fast_share_max` of their scored ratings
        faster than `too_fast_seconds`, nor (with at least `retest_min_pairs` repeats) a mean
        absolute test-retest difference above `retest_mad_max`;
    (f) blinding: the served files' encoding chain does not separate real from synthetic.
    """

    version: int = CURRENT_VERSION
    mean_min: float = 5.0
    median_share_min: float = 0.90
    median_at_least: int = 4
    low_share_max: float = 0.10
    low_below: int = 3
    use_interval: bool = False
    per_fst: bool = False
    # A rating faster than this did not look at the image (the rater behaviour section's
    # limit since version 1; a dermatologist needs more than a glance for a 512 px image).
    too_fast_seconds: float = 1.5
    # A rater fails (e) if more than 20% of their scored ratings are too fast: an occasional
    # quick call on an obvious image is fine, one in five is a habit.
    too_fast_share_max: float = 0.20
    # A rater fails (e) if their repeated images differ from their first rating by more than
    # 1.5 points on average: within one point is ordinary noise on a 1-7 scale, while a rater
    # answering at random averages about 2.3 (uniform scores: 16 / 7).
    retest_mad_max: float = 1.5
    # With fewer repeats than this the test-retest limit is not judged (and the report says so).
    retest_min_pairs: int = 5

    def __post_init__(self) -> None:
        problems = []
        if not is_int(self.version) or self.version not in VERSIONS:
            problems.append(f"version must be one of {VERSIONS}, got {self.version!r}")
        if not is_number(self.mean_min) or not 1 <= self.mean_min <= 7:
            problems.append(f"mean_min must be a number in [1, 7], got {self.mean_min!r}")
        for name in ("median_share_min", "low_share_max", "too_fast_share_max"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= 1:
                problems.append(f"{name} must be a share in [0, 1], got {value!r}")
        for name in ("median_at_least", "low_below"):
            value = getattr(self, name)
            if not is_int(value) or value not in SCORES:
                problems.append(f"{name} must be an integer score 1-7, got {value!r}")
        for name in ("use_interval", "per_fst"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                problems.append(f"{name} must be true or false, got {value!r}")
        for name in ("too_fast_seconds", "retest_mad_max"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                problems.append(f"{name} must be a number >= 0, got {value!r}")
        if not is_int(self.retest_min_pairs) or self.retest_min_pairs < 1:
            problems.append(
                f"retest_min_pairs must be an integer >= 1, got {self.retest_min_pairs!r}"
            )
        if problems:
            raise ValueError("invalid gate criteria: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateCriteria:
        """Missing keys take the defaults; unknown keys are an error, not silently dropped."""
        if not isinstance(data, Mapping):
            raise ValueError(f"gate criteria must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(f"unknown gate criteria key(s): {', '.join(map(str, unknown))}")
        return cls(**data)
