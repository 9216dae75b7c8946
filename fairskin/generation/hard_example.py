"""Hard-example batches: quotas that follow where a classifier errs (torch-free, Django-free).

A classifier run stores its per-image predictions on the validation split
(``val_predictions.json``). :func:`error_table` counts, per diagnosis x Fitzpatrick type, the
validation images and how many of them the classifier got wrong (its top class is not the
label). :func:`plan_hard_examples` splits a batch's target over those strata:

* every stratum first gets ``floor`` images;
* a stratum with fewer than ``min_images`` validation images is not judged (a rate over two
  images says nothing) and stays at the floor, flagged so;
* the rest of the target goes to the judged strata in proportion to the Laplace estimate of
  their error, (errors + 1) / (n + 2), so a stratum with no error still gets a little and one
  with every image wrong does not take everything;
* no stratum gets more than ``cap`` images (``cap_share`` of the target, at least the floor);
  what a capped stratum cannot take goes to the others, in the same proportions;
* whole images by largest remainder, ties to the higher Laplace error, then the diagnosis in
  the seven-class order, then the lighter skin type: the same table always gives the same plan.

The validation split is used, never the test split: the test split is what the fairness report
compares the classifier retrained with these images against, and choosing what to generate
from its errors would make that comparison flatter the hard examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fairskin.labels import FST_TYPES, SEVEN_CLASSES, fst_roman

DX_ORDER = [d.value for d in SEVEN_CLASSES]


class HardExampleError(ValueError):
    """A hard-example plan that cannot be made, with the reason."""


@dataclass(frozen=True)
class HardExampleSettings:
    """The bounds of a plan. ``floor``: images every stratum gets; ``cap_share``: the most one
    stratum may get, as a share of the target; ``min_images``: validation images a stratum
    needs before its error rate sets its quota."""

    floor: int = 1
    cap_share: float = 0.25
    min_images: int = 5

    def problems(self) -> list[str]:
        out = []
        if isinstance(self.floor, bool) or not isinstance(self.floor, int) or self.floor < 0:
            out.append(f"the floor is a whole number of images, 0 or more, not {self.floor!r}")
        if not (isinstance(self.cap_share, int | float) and 0 < self.cap_share <= 1):
            out.append(f"the cap share must be above 0 and at most 1, not {self.cap_share!r}")
        if (
            isinstance(self.min_images, bool)
            or not isinstance(self.min_images, int)
            or self.min_images < 1
        ):
            out.append(
                f"the minimum of validation images per stratum is a whole number, 1 or more, "
                f"not {self.min_images!r}"
            )
        return out

    def cap(self, target: int) -> int:
        """The most images one stratum may get in a batch of ``target``."""
        return max(self.floor, math.ceil(self.cap_share * target - 1e-9))


@dataclass(frozen=True)
class StratumErrors:
    """One diagnosis x skin type cell of the validation split: images and misclassified ones."""

    diagnosis: str
    fst: int
    n: int
    errors: int

    @property
    def key(self) -> str:
        return f"{self.diagnosis}:{self.fst}"

    @property
    def label(self) -> str:
        return f"{self.diagnosis} × FST {fst_roman(self.fst)}"

    @property
    def rate(self) -> float | None:
        return self.errors / self.n if self.n else None

    @property
    def laplace(self) -> float:
        return (self.errors + 1) / (self.n + 2)


def error_table(
    predictions: Mapping[str, Any],
    diagnoses: Sequence[str],
    fsts: Sequence[int] = FST_TYPES,
) -> list[StratumErrors]:
    """Validation images and errors per (diagnosis, FST) for ``diagnoses`` x ``fsts``, from
    stored predictions ({"classes", "labels", "fst", "proba"}); strata without images are
    listed with n = 0. Images of other diagnoses or without a skin type are left out."""
    classes = list(predictions.get("classes") or [])
    labels = list(predictions.get("labels") or [])
    types = list(predictions.get("fst") or [])
    proba = list(predictions.get("proba") or [])
    if not labels:
        raise HardExampleError("the classifier run stored no validation predictions")
    if not (len(labels) == len(types) == len(proba)):
        raise HardExampleError(
            f"the validation predictions disagree in length: {len(labels)} labels, "
            f"{len(types)} skin types, {len(proba)} probability rows"
        )
    if not diagnoses:
        raise HardExampleError("give at least one diagnosis to plan hard examples for")
    unknown = [d for d in diagnoses if d not in classes]
    if unknown:
        raise HardExampleError(
            f"{', '.join(unknown)}: not a class of this classifier "
            f"(its classes: {', '.join(classes) or 'none'})"
        )
    if len(set(diagnoses)) != len(diagnoses):
        raise HardExampleError("give each diagnosis once")
    bad_fsts = [f for f in fsts if f not in FST_TYPES]
    if bad_fsts or not fsts:
        raise HardExampleError(f"skin types are 1-6, not {bad_fsts or 'none'}")
    counts = {(dx, f): [0, 0] for dx in diagnoses for f in fsts}
    for label, fst, row in zip(labels, types, proba, strict=True):
        if len(row) != len(classes):
            raise HardExampleError(
                f"a probability row has {len(row)} values for {len(classes)} classes"
            )
        cell = counts.get((classes[int(label)], fst))
        if cell is None:
            continue
        predicted = max(range(len(row)), key=lambda k: (row[k], -k))  # first of equal tops
        cell[0] += 1
        cell[1] += int(predicted != int(label))
    return [
        StratumErrors(dx, f, n, errors)
        for (dx, f), (n, errors) in sorted(
            counts.items(),
            key=lambda kv: (
                DX_ORDER.index(kv[0][0]) if kv[0][0] in DX_ORDER else 99,
                kv[0][0],
                kv[0][1],
            ),
        )
    ]


@dataclass(frozen=True)
class StratumQuota:
    stratum: StratumErrors
    quota: int
    judged: bool  # enough validation images for its error rate to set the quota
    capped: bool
    reason: str


@dataclass(frozen=True)
class HardExamplePlan:
    target: int
    settings: HardExampleSettings
    cap: int
    rows: tuple[StratumQuota, ...]

    def quotas(self) -> dict[str, int]:
        """The batch's quotas ({"MEL:6": 14}), strata with a quota of 0 left out."""
        return {r.stratum.key: r.quota for r in self.rows if r.quota}

    @property
    def summary(self) -> str:
        judged = sum(r.judged for r in self.rows)
        share = _percent(self.settings.cap_share)
        return (
            f"{self.target} images over {len(self.rows)} strata: each gets at least "
            f"{self.settings.floor}, at most {self.cap} ({share} of the target); the "
            f"{judged} strata with at least {self.settings.min_images} validation images "
            "share the rest in proportion to their Laplace error (errors + 1) / (n + 2)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "floor": self.settings.floor,
            "cap": self.cap,
            "cap_share": self.settings.cap_share,
            "min_images": self.settings.min_images,
            "summary": self.summary,
            "table": [
                {
                    "stratum": r.stratum.key,
                    "diagnosis": r.stratum.diagnosis,
                    "fst": r.stratum.fst,
                    "n": r.stratum.n,
                    "errors": r.stratum.errors,
                    "rate": r.stratum.rate,
                    "laplace": round(r.stratum.laplace, 6),
                    "quota": r.quota,
                    "judged": r.judged,
                    "capped": r.capped,
                    "reason": r.reason,
                }
                for r in self.rows
            ],
        }


def _percent(x: float) -> str:
    return f"{100 * x:.0f} %"


def _reason(s: StratumErrors, quota: int, *, judged: bool, capped: bool, min_images: int) -> str:
    seen = (
        f"{s.errors} of {s.n} validation image{'s' if s.n != 1 else ''} misclassified"
        if s.n
        else "no validation image"
    )
    if not judged:
        return (
            f"{s.label}: {seen}; too few images to judge (fewer than {min_images}), "
            f"quota at the floor → quota {quota}"
        )
    rate = s.rate if s.rate is not None else 0.0
    tail = " (at the cap)" if capped else ""
    return (
        f"{s.label}: {seen} ({_percent(rate)}, Laplace {_percent(s.laplace)}) → quota {quota}{tail}"
    )


def _tie_order(s: StratumErrors) -> tuple[float, int, str, int]:
    dx = DX_ORDER.index(s.diagnosis) if s.diagnosis in DX_ORDER else 99
    return (-s.laplace, dx, s.diagnosis, s.fst)


def _share_out(extra: int, judged: Sequence[StratumErrors], room: int) -> dict[str, int]:
    """``extra`` whole images over ``judged`` in proportion to their Laplace error, none over
    ``room``: capped strata are set at ``room`` and the rest re-shared among the others."""
    out: dict[str, int] = {}
    active = list(judged)
    left = extra
    while active:
        total = sum(s.laplace for s in active)
        exact = {s.key: left * s.laplace / total for s in active}
        over = [s for s in active if exact[s.key] > room]
        if not over:
            break
        for s in over:
            out[s.key] = room
            left -= room
        active = [s for s in active if s not in over]
    if not active:
        return out
    total = sum(s.laplace for s in active)
    exact = {s.key: left * s.laplace / total for s in active}
    whole = {s.key: math.floor(exact[s.key] + 1e-9) for s in active}
    spare = left - sum(whole.values())
    order = sorted(active, key=lambda s: (-(exact[s.key] - whole[s.key]), *_tie_order(s)))
    for s in order[:spare]:
        whole[s.key] += 1
    return out | whole


def plan_hard_examples(
    table: Sequence[StratumErrors],
    target: int,
    settings: HardExampleSettings | None = None,
) -> HardExamplePlan:
    """Quotas summing to ``target`` that follow the table's errors, within the bounds."""
    settings = settings or HardExampleSettings()
    problems = settings.problems()
    if problems:
        raise HardExampleError("; ".join(problems))
    if not table:
        raise HardExampleError("the error table is empty: no stratum to plan")
    keys = [s.key for s in table]
    if len(set(keys)) != len(keys):
        raise HardExampleError("the error table lists a stratum more than once")
    for s in table:
        if s.n < 0 or not 0 <= s.errors <= s.n:
            raise HardExampleError(f"{s.label}: {s.errors} errors of {s.n} images is impossible")
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise HardExampleError(f"the target must be a positive whole number, not {target!r}")
    floor, cap = settings.floor, settings.cap(target)
    if target < len(table) * floor:
        raise HardExampleError(
            f"a target of {target} cannot give {len(table)} strata {floor} image(s) each "
            f"(the floor needs {len(table) * floor}); raise the target or lower the floor"
        )
    judged = [s for s in table if s.n >= settings.min_images]
    if not judged:
        raise HardExampleError(
            f"no stratum has {settings.min_images} or more validation images, so no error "
            f"rate can set a quota; lower the minimum or validate on more images"
        )
    room = cap - floor
    extra = target - len(table) * floor
    if extra > room * len(judged):
        raise HardExampleError(
            f"{len(judged)} judged strata capped at {cap} image(s) cannot take {target} images "
            f"with {len(table) - len(judged)} more at the floor of {floor}; raise the cap "
            f"share or lower the target"
        )
    share = _share_out(extra, judged, room)
    rows = []
    for s in table:
        is_judged = s.key in share
        quota = floor + share.get(s.key, 0)
        capped = is_judged and quota >= cap and room > 0
        rows.append(
            StratumQuota(
                s,
                quota,
                is_judged,
                capped,
                _reason(s, quota, judged=is_judged, capped=capped, min_images=settings.min_images),
            )
        )
    return HardExamplePlan(target, settings, cap, tuple(rows))
