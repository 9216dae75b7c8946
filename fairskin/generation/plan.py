"""Generation plans: quotas per stratum, one fixed seed per candidate, acceptance in seed order.

A batch asks for N accepted images over diagnoses x Fitzpatrick types. Every stratum gets a
quota and a cap on candidates (over-generation); every candidate has a seed derived only from
the batch seed and its place in the stratum, so the same batch draws the same images however
the work is sharded. Acceptance walks each stratum's candidates in seed order and stops at the
quota, so it does not depend on which shard finished first either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fairskin.allocation import largest_remainder
from fairskin.generation.spec import DEFAULT_FST_DISTRIBUTION
from fairskin.labels import FST_TYPES, Diagnosis


class Stratum(NamedTuple):
    """A diagnosis x Fitzpatrick type cell of a batch. Stored as its :attr:`key` ("MEL:6") in
    the batch's JSON columns (quotas, planned, outcomes); :meth:`from_key` reads it back."""

    diagnosis: str
    fst: int

    @property
    def key(self) -> str:
        return f"{self.diagnosis}:{self.fst}"

    @classmethod
    def from_key(cls, key: str) -> Stratum:
        diagnosis, sep, fst = key.partition(":")
        if not sep or not diagnosis:
            raise ValueError(f"a stratum key is DIAGNOSIS:FST, not {key!r}")
        return cls(diagnosis, int(fst))


class PlanError(ValueError):
    """A batch request that cannot be planned."""


def plan_quotas(
    target: int, diagnoses: Sequence[str], fst_distribution: Mapping[int, float] | None = None
) -> dict[Stratum, int]:
    """Accepted images wanted per (diagnosis, FST): diagnoses share the target equally, each
    diagnosis's share is split over skin types by the distribution."""
    distribution = dict(fst_distribution or DEFAULT_FST_DISTRIBUTION)
    if target <= 0:
        raise PlanError("the target number of accepted images must be positive")
    codes = [Diagnosis(d).value for d in diagnoses]
    if not codes or len(set(codes)) != len(codes):
        raise PlanError("give at least one diagnosis, each once")
    if Diagnosis.OTHER.value in codes:
        raise PlanError("OTHER is not a class images can be generated for")
    if set(distribution) - set(FST_TYPES) or any(v < 0 for v in distribution.values()):
        raise PlanError("the FST distribution maps types 1-6 to non-negative shares")
    if abs(sum(distribution.values()) - 1) > 1e-6:
        raise PlanError(
            f"the FST distribution must add up to 1, not {sum(distribution.values()):.4f}"
        )
    per_dx = largest_remainder(target, {dx: 1.0 for dx in codes})
    quotas: dict[Stratum, int] = {}
    for dx in codes:
        split = largest_remainder(per_dx[dx], {f: w for f, w in distribution.items() if w > 0})
        for fst, n in sorted(split.items()):
            if n:
                quotas[Stratum(dx, fst)] = n
    return quotas


def check_quotas(quotas: Mapping[str, object], target: int) -> dict[Stratum, int]:
    """Explicit quotas ({"MEL:6": 14}, e.g. a hard-example plan's) checked and read: keys are
    DIAGNOSIS:FST of the seven classes and types 1-6, values whole numbers of 0 or more that
    add up to ``target``. Strata at 0 are dropped; the rest keep the order given."""
    if not quotas:
        raise PlanError("explicit quotas are empty")
    out: dict[Stratum, int] = {}
    problems = []
    generable = {d.value for d in Diagnosis if d is not Diagnosis.OTHER}
    for key, value in quotas.items():
        try:
            stratum = Stratum.from_key(str(key))
        except ValueError:
            problems.append(f"{key!r} is not a DIAGNOSIS:FST stratum such as 'MEL:6'")
            continue
        if stratum.diagnosis not in generable:
            problems.append(f"{key!r}: {stratum.diagnosis} is not a diagnosis images are made for")
        elif stratum.fst not in FST_TYPES:
            problems.append(f"{key!r}: skin types are 1-6")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{key!r}: a quota is a whole number of 0 or more, not {value!r}")
        elif stratum in out:
            problems.append(f"{key!r} is given twice")
        else:
            out[stratum] = value
    if problems:
        raise PlanError("; ".join(problems))
    if sum(out.values()) != target:
        raise PlanError(f"the quotas add up to {sum(out.values())}, not the target of {target}")
    return {s: n for s, n in out.items() if n}


def candidate_cap(quota: int, overgeneration: float) -> int:
    """How many candidates a stratum may draw before its shortfall is reported."""
    if not overgeneration >= 1 or not math.isfinite(overgeneration):
        raise PlanError(
            f"the over-generation cap must be a finite number of at least 1x, "
            f"got {overgeneration!r}"
        )
    return math.ceil(quota * overgeneration)


@dataclass(frozen=True)
class StratumPlan:
    stratum: Stratum
    quota: int  # accepted images wanted
    cap: int  # candidates it may draw before its shortfall is reported


@dataclass(frozen=True)
class Plan:
    """A batch's strata with their quotas and candidate caps, fixed when it is created.

    The batch stores only the quotas (``{"MEL:6": 12}``, :meth:`quotas_json`) and the
    over-generation factor; :meth:`from_json` rebuilds the same plan from them, so each
    stratum's cap is computed here and nowhere else.
    """

    strata: tuple[StratumPlan, ...]

    @classmethod
    def build(cls, quotas: Mapping[Stratum, int], overgeneration: float) -> Plan:
        return cls(
            tuple(
                StratumPlan(Stratum(*stratum), quota, candidate_cap(quota, overgeneration))
                for stratum, quota in quotas.items()
            )
        )

    @classmethod
    def from_json(cls, quotas: Mapping[str, int], overgeneration: float) -> Plan:
        return cls.build(
            {Stratum.from_key(key): int(n) for key, n in quotas.items()}, overgeneration
        )

    def quotas_json(self) -> dict[str, int]:
        return {s.stratum.key: s.quota for s in self.strata}

    def __iter__(self) -> Iterator[StratumPlan]:
        return iter(self.strata)

    def __len__(self) -> int:
        return len(self.strata)


def plan_batch(
    target: int,
    diagnoses: Sequence[str],
    fst_distribution: Mapping[int, float] | None,
    overgeneration: float,
) -> Plan:
    """Quotas by :func:`plan_quotas`, each stratum capped at ``overgeneration`` x its quota."""
    return Plan.build(plan_quotas(target, diagnoses, fst_distribution), overgeneration)


def candidate_seed(batch_seed: int, stratum: Stratum, index: int) -> int:
    """The seed of a stratum's ``index``-th candidate: a function of these three only."""
    dx, fst = stratum
    code = sorted(d.value for d in Diagnosis).index(Diagnosis(dx).value)
    sequence = np.random.SeedSequence([batch_seed, code, fst, index])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


class CandidateRange(NamedTuple):
    """Candidates ``start`` .. ``stop - 1`` of one stratum. A shard job holds a list of them,
    stored in its params as ``[diagnosis, fst, start, stop]`` lists (JSON writes a tuple so)."""

    diagnosis: str
    fst: int
    start: int  # first candidate index (inclusive)
    stop: int  # last candidate index (exclusive)

    @property
    def stratum(self) -> Stratum:
        return Stratum(self.diagnosis, self.fst)

    @property
    def size(self) -> int:
        return self.stop - self.start


def cut_into_shards(ranges: Iterable[CandidateRange], size: int) -> list[list[CandidateRange]]:
    """Split candidate ranges into shards of at most ``size`` candidates, in order."""
    if size <= 0:
        raise PlanError("shard size must be positive")
    shards: list[list[CandidateRange]] = []
    current: list[CandidateRange] = []
    room = size
    for dx, fst, start, stop in ranges:
        while start < stop:
            take = min(room, stop - start)
            current.append(CandidateRange(dx, fst, start, start + take))
            start += take
            room -= take
            if room == 0:
                shards.append(current)
                current, room = [], size
    if current:
        shards.append(current)
    return shards


@dataclass(frozen=True)
class Verdict:
    index: int
    accepted: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class StratumDecision:
    verdicts: list[Verdict]  # in index order, for every index decided so far
    accepted: list[int]
    complete: bool  # quota met, or cap spent with every candidate scored
    shortfall: int


def decide_stratum(
    quota: int,
    cap: int,
    scored: Mapping[int, tuple[tuple[str, ...], object]],
    *,
    is_duplicate: Callable[[object, Sequence[object]], bool],
) -> StratumDecision:
    """Accept a stratum's candidates in index (seed) order.

    ``scored`` maps a candidate index to (its failed checks, its embedding). A candidate with
    no failed check is accepted unless ``is_duplicate`` finds it too close to an image accepted
    earlier in seed order; that is the only check that depends on other candidates, and it only
    looks backwards, so the outcome is the same however the work was split. Decisions stop at
    the first index not scored yet, and once the quota is met.
    """
    verdicts: list[Verdict] = []
    accepted: list[int] = []
    accepted_embeddings: list[object] = []
    index = 0
    while index < cap and len(accepted) < quota and index in scored:
        failed, embedding = scored[index]
        reasons = tuple(failed)
        if not reasons and is_duplicate(embedding, accepted_embeddings):
            reasons = ("near-duplicate of an accepted image",)
        verdicts.append(Verdict(index, not reasons, reasons))
        if not reasons:
            accepted.append(index)
            accepted_embeddings.append(embedding)
        index += 1
    complete = len(accepted) >= quota or index >= cap
    return StratumDecision(verdicts, accepted, complete, max(0, quota - len(accepted)))
