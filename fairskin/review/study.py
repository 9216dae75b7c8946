"""The review's inputs: items, ratings, and the validated raters x items matrix of scores.

Scores run 1-7 (1 = clearly fake, 4 = uncertain, 7 = clinically realistic). Only "scored"
ratings enter the statistics; "warmup" ratings never count and "retest" ratings (a repeated
item) are used for test-retest agreement only. Every report is plain JSON: a statistic that
cannot be computed is None next to a "why" string saying what was missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

ORIGINS = ("synthetic", "real")
KINDS = ("scored", "warmup", "retest")
SCORES = tuple(range(1, 8))
SKIN_TYPES = tuple(range(1, 7))


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def finite_or_none(value: Any) -> float | None:
    """A float for the JSON report, None where there is none or it is not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class ReviewItem:
    item_id: str
    origin: str  # "synthetic" | "real"
    diagnosis: str
    fst: int  # Fitzpatrick skin type 1-6

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ValueError(f"item_id must be a non-empty string, got {self.item_id!r}")
        if self.origin not in ORIGINS:
            raise ValueError(
                f"item {self.item_id}: origin must be one of {ORIGINS}, got {self.origin!r}"
            )
        if not isinstance(self.diagnosis, str) or not self.diagnosis:
            raise ValueError(f"item {self.item_id}: diagnosis must be a non-empty string")
        if not is_int(self.fst) or self.fst not in SKIN_TYPES:
            raise ValueError(f"item {self.item_id}: fst must be an integer 1-6, got {self.fst!r}")


@dataclass(frozen=True)
class Rating:
    rater_id: str
    item_id: str
    score: int
    seconds: float  # time spent on the image
    position: int  # place in that rater's order
    kind: str = "scored"  # "scored" | "warmup" | "retest"

    def __post_init__(self) -> None:
        where = f"rating by {self.rater_id!r} of {self.item_id!r}"
        for name in ("rater_id", "item_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}: {name} must be a non-empty string, got {value!r}")
        if not is_int(self.score) or self.score not in SCORES:
            raise ValueError(f"{where}: score must be an integer 1-7, got {self.score!r}")
        if not is_number(self.seconds) or self.seconds < 0:
            raise ValueError(f"{where}: seconds must be a finite number >= 0, got {self.seconds!r}")
        if not is_int(self.position):
            raise ValueError(f"{where}: position must be an integer, got {self.position!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")


def _as_item(value: ReviewItem | Mapping[str, Any]) -> ReviewItem:
    if isinstance(value, ReviewItem):
        return value
    missing = [f.name for f in fields(ReviewItem) if f.name not in value]
    if missing:
        raise ValueError(f"item {dict(value)!r} is missing {', '.join(missing)}")
    return ReviewItem(
        item_id=str(value["item_id"]),
        origin=value["origin"],
        diagnosis=value["diagnosis"],
        fst=value["fst"],
    )


def _as_rating(value: Rating | Mapping[str, Any]) -> Rating:
    if isinstance(value, Rating):
        return value
    required = ("rater_id", "item_id", "score", "seconds", "position")
    missing = [name for name in required if name not in value]
    if missing:
        raise ValueError(f"rating {dict(value)!r} is missing {', '.join(missing)}")
    return Rating(
        rater_id=str(value["rater_id"]),
        item_id=str(value["item_id"]),
        score=value["score"],
        seconds=value["seconds"],
        position=value["position"],
        kind=value.get("kind", "scored"),
    )


class Study:
    """Validated items and ratings, with the scored ratings as a raters x items matrix."""

    def __init__(
        self,
        items: Sequence[ReviewItem | Mapping[str, Any]],
        ratings: Sequence[Rating | Mapping[str, Any]],
        raters: Mapping[str, bool],
    ) -> None:
        if not isinstance(raters, Mapping) or not raters:
            raise ValueError("raters must map each enrolled rater id to whether they finished")
        self.finished: dict[str, bool] = {}
        for key, done in raters.items():
            if not isinstance(done, bool):
                raise ValueError(f"rater {key!r}: finished must be true or false, got {done!r}")
            if str(key) in self.finished:
                raise ValueError(f"rater id {key!r} appears twice")
            self.finished[str(key)] = done
        self.raters = list(self.finished)
        self.items = [_as_item(item) for item in items]
        if not self.items:
            raise ValueError("no items to report on")
        self.column: dict[str, int] = {}
        for index, item in enumerate(self.items):
            if item.item_id in self.column:
                raise ValueError(f"item id {item.item_id!r} appears twice")
            self.column[item.item_id] = index
        row = {rater: index for index, rater in enumerate(self.raters)}

        self.scores = np.full((len(self.raters), len(self.items)), np.nan)
        self.scored_by: dict[str, list[Rating]] = {rater: [] for rater in self.raters}
        self.retests_by: dict[str, list[Rating]] = {rater: [] for rater in self.raters}
        self.n_kind = {rater: dict.fromkeys(KINDS, 0) for rater in self.raters}
        positions: set[tuple[str, int]] = set()
        for rating in map(_as_rating, ratings):
            if rating.rater_id not in row:
                raise ValueError(f"rating by unknown rater {rating.rater_id!r}")
            if (rating.rater_id, rating.position) in positions:
                raise ValueError(
                    f"rater {rating.rater_id!r} has two ratings at position {rating.position}"
                )
            positions.add((rating.rater_id, rating.position))
            self.n_kind[rating.rater_id][rating.kind] += 1
            if rating.kind == "warmup":
                continue
            if rating.item_id not in self.column:
                raise ValueError(f"{rating.kind} rating of unknown item {rating.item_id!r}")
            if rating.kind == "retest":
                self.retests_by[rating.rater_id].append(rating)
                continue
            cell = (row[rating.rater_id], self.column[rating.item_id])
            if not np.isnan(self.scores[cell]):
                raise ValueError(
                    f"rater {rating.rater_id!r} has two scored ratings of item {rating.item_id!r}"
                )
            self.scores[cell] = rating.score
            self.scored_by[rating.rater_id].append(rating)

    def columns(self, predicate: Callable[[ReviewItem], bool]) -> np.ndarray:
        return np.array([i for i, item in enumerate(self.items) if predicate(item)], dtype=int)

    def origin_scores(self, origin: str) -> np.ndarray:
        return self.scores[:, self.columns(lambda item: item.origin == origin)]

    def counts(self) -> dict[str, Any]:
        unrated = np.isnan(self.scores).all(axis=0)
        return {
            "items": {
                origin: sum(item.origin == origin for item in self.items) for origin in ORIGINS
            },
            "raters": len(self.raters),
            "ratings": {kind: sum(n[kind] for n in self.n_kind.values()) for kind in KINDS},
            "unrated_items": [
                item.item_id for item, no in zip(self.items, unrated, strict=True) if no
            ],
        }
