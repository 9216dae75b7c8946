"""Generation plans: quotas per stratum, one fixed seed per candidate, acceptance in seed order.

A batch asks for N accepted images over diagnoses x Fitzpatrick types. Every stratum gets a
quota and a cap on candidates (over-generation); every candidate has a seed derived only from
the batch seed and its place in the stratum, so the same batch draws the same images however
the work is sharded. Acceptance walks each stratum's candidates in seed order and stops at the
quota, so it does not depend on which shard finished first either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fairskin.allocation import largest_remainder
from fairskin.labels import FST_TYPES, Diagnosis

DEFAULT_FST_DISTRIBUTION = {1: 0.10, 2: 0.10, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}
DEFAULT_OVERGENERATION = 1.5

Stratum = tuple[str, int]  # (diagnosis code, Fitzpatrick type)


class PlanError(ValueError):
    """A batch request that cannot be planned."""


def plan_quotas(target: int, diagnoses: Sequence[str],
                fst_distribution: Mapping[int, float] | None = None) -> dict[Stratum, int]:
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
        raise PlanError(f"the FST distribution must add up to 1, not "
                        f"{sum(distribution.values()):.4f}")
    per_dx = largest_remainder(target, {dx: 1.0 for dx in codes})
    quotas: dict[Stratum, int] = {}
    for dx in codes:
        split = largest_remainder(per_dx[dx], {f: w for f, w in distribution.items() if w > 0})
        for fst, n in sorted(split.items()):
            if n:
                quotas[(dx, fst)] = n
    return quotas


def candidate_cap(quota: int, overgeneration: float = DEFAULT_OVERGENERATION) -> int:
    """How many candidates a stratum may draw before its shortfall is reported."""
    if overgeneration < 1:
        raise PlanError("the over-generation cap must be at least 1x")
    return math.ceil(quota * overgeneration)


def candidate_seed(batch_seed: int, stratum: Stratum, index: int) -> int:
    """The seed of a stratum's ``index``-th candidate: a function of these three only."""
    dx, fst = stratum
    code = sorted(d.value for d in Diagnosis).index(Diagnosis(dx).value)
    sequence = np.random.SeedSequence([batch_seed, code, fst, index])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class Shard:
    stratum: Stratum
    start: int  # first candidate index (inclusive)
    stop: int  # last candidate index (exclusive)


def plan_shards(quotas: Mapping[Stratum, int], *, overgeneration: float,
                shard_size: int) -> list[Shard]:
    """Candidate index ranges covering every stratum's cap, at most ``shard_size`` each."""
    if shard_size <= 0:
        raise PlanError("shard size must be positive")
    shards = []
    for stratum, quota in quotas.items():
        cap = candidate_cap(quota, overgeneration)
        shards += [Shard(stratum, start, min(start + shard_size, cap))
                   for start in range(0, cap, shard_size)]
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


def realised_distribution(quotas: Iterable[tuple[Stratum, int]]) -> dict[int, float]:
    """Share of each skin type in a set of (stratum, count) pairs."""
    totals: dict[int, int] = {}
    for (_, fst), n in quotas:
        totals[fst] = totals.get(fst, 0) + n
    grand = sum(totals.values()) or 1
    return {fst: n / grand for fst, n in sorted(totals.items())}
