"""Which images a blinded realism study shows, and in what order each rater sees them.

``sample_study`` draws synthetic images stratified by (diagnosis, Fitzpatrick type) in proportion
to the generation batch, and real control images matched to the same strata. ``rater_order``
turns the study's items into one rater's sequence: warm-ups first, then a shuffle in which
neither origin comes in long runs, with some items shown again later as retests.

Everything is seeded through ``numpy.random.SeedSequence`` and starts from inputs sorted by id,
so the same arguments give the same plan and the same orders on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fairskin.allocation import largest_remainder
from fairskin.labels import FST_TYPES, fst_roman

Stratum = tuple[str, int]  # (diagnosis code, Fitzpatrick type)
OrderKind = Literal["warmup", "scored", "retest"]

# Distinct streams for the two uses of a study seed. SeedSequence treats trailing zero words as
# absent, so every entropy list ends in one of these non-zero tags.
_SAMPLE_STREAM = 0x5A3E
_ORDER_STREAM = 0x0D3E
DEFAULT_RETEST_GAP = 20


@dataclass(frozen=True)
class Candidate:
    """An image that may go into a study: a synthetic image of a batch or a real catalog image."""

    id: int
    diagnosis: str
    fst: int

    def __post_init__(self) -> None:
        if not self.diagnosis:
            raise ValueError(f"image {self.id}: the diagnosis is empty")
        if self.fst not in FST_TYPES:
            raise ValueError(
                f"image {self.id}: Fitzpatrick skin type must be 1-6, got {self.fst!r}"
            )

    @property
    def stratum(self) -> Stratum:
        return (self.diagnosis, self.fst)


@dataclass(frozen=True)
class Control:
    """A real image in the study, standing in for ``stratum``.

    ``substituted_from`` is set when the image comes from another stratum because the catalog has
    too few real images of ``stratum``; ``reason`` then says why.
    """

    id: int
    stratum: Stratum
    substituted_from: Stratum | None = None
    reason: str | None = None

    @property
    def is_substitute(self) -> bool:
        return self.substituted_from is not None


@dataclass(frozen=True)
class StratumCounts:
    in_batch: int  # accepted synthetic images of the stratum in the batch
    synthetic: int  # synthetic images drawn into the study
    controls_wanted: int
    controls_matched: int  # real controls of the stratum itself
    controls_substituted: int  # real controls taken from a neighbouring stratum


@dataclass(frozen=True)
class StudyPlan:
    seed: int
    synthetic_ids: tuple[int, ...]
    controls: tuple[Control, ...]
    strata: Mapping[Stratum, StratumCounts]
    control_ratio_requested: float
    control_ratio: float  # achieved: controls drawn / synthetic images drawn
    controls_wanted: int
    control_shortfall: int  # controls wanted but not drawn: the catalog ran out of real images
    substitutions: tuple[str, ...]  # one line per (stratum, donor stratum) substitution

    @property
    def control_ids(self) -> tuple[int, ...]:
        return tuple(control.id for control in self.controls)


@dataclass(frozen=True)
class OrderEntry:
    item_id: int
    kind: OrderKind


def sample_study(
    synthetic: Sequence[Candidate],
    real: Sequence[Candidate],
    *,
    size: int = 500,
    control_ratio: float = 0.25,
    seed: int,
) -> StudyPlan:
    """Draw ``size`` synthetic images and ``round(drawn * control_ratio)`` real controls.

    Synthetic images are apportioned to (diagnosis, FST) strata in proportion to the batch by
    largest remainders, so the counts add up to ``size`` exactly; a batch no larger than ``size``
    is taken whole. Controls are apportioned to the strata in proportion to the synthetic draw and
    drawn from real images of the same stratum. A stratum short of real images takes the rest
    from the nearest stratum that has some: the same diagnosis at the closest FST (the lower FST
    on a tie), then other diagnoses at the same FST, and as a last resort any stratum, closest
    FST first, so the mix keeps its ratio while real images remain. Such controls are flagged.
    No real image is drawn twice; when the catalog runs out, the plan reports the shortfall.
    """
    if size <= 0:
        raise ValueError(f"the study size must be positive, got {size}")
    if not math.isfinite(control_ratio) or control_ratio < 0:
        raise ValueError(f"control_ratio must be a non-negative number, got {control_ratio}")
    if seed < 0:
        raise ValueError(f"the seed must be non-negative, got {seed}")
    synthetic_pools = _pools_by_stratum(synthetic, "synthetic")
    real_pools = _pools_by_stratum(real, "real")
    if not synthetic_pools:
        raise ValueError("the batch has no synthetic images to sample from")

    synthetic_rng, control_rng = (
        np.random.default_rng(child)
        for child in np.random.SeedSequence([seed, _SAMPLE_STREAM]).spawn(2)
    )

    in_batch = {stratum: len(ids) for stratum, ids in synthetic_pools.items()}
    if size >= sum(in_batch.values()):
        quotas = dict(in_batch)
    else:
        quotas = largest_remainder(size, in_batch)
    drawn = {
        stratum: _draw(synthetic_rng, synthetic_pools[stratum], quotas[stratum])
        for stratum in synthetic_pools
    }
    synthetic_ids = tuple(sorted(i for ids in drawn.values() for i in ids))

    controls_wanted = round(len(synthetic_ids) * control_ratio)
    control_quotas = largest_remainder(
        controls_wanted, {stratum: len(ids) for stratum, ids in drawn.items() if ids}
    )
    controls, substitutions = _draw_controls(control_rng, control_quotas, real_pools)

    strata = {
        stratum: StratumCounts(
            in_batch=in_batch[stratum],
            synthetic=len(drawn[stratum]),
            controls_wanted=control_quotas.get(stratum, 0),
            controls_matched=sum(
                1 for c in controls if c.stratum == stratum and not c.is_substitute
            ),
            controls_substituted=sum(
                1 for c in controls if c.stratum == stratum and c.is_substitute
            ),
        )
        for stratum in synthetic_pools
    }
    return StudyPlan(
        seed=seed,
        synthetic_ids=synthetic_ids,
        controls=tuple(sorted(controls, key=lambda c: (c.stratum, c.id))),
        strata=strata,
        control_ratio_requested=control_ratio,
        control_ratio=len(controls) / len(synthetic_ids),
        controls_wanted=controls_wanted,
        control_shortfall=controls_wanted - len(controls),
        substitutions=tuple(substitutions),
    )


def _pools_by_stratum(candidates: Sequence[Candidate], what: str) -> dict[Stratum, list[int]]:
    """Ids per stratum, strata and ids sorted, so the input order never matters."""
    seen: set[int] = set()
    pools: dict[Stratum, list[int]] = {}
    for candidate in sorted(candidates, key=lambda c: c.id):
        if candidate.id in seen:
            raise ValueError(f"{what} image {candidate.id} is listed more than once")
        seen.add(candidate.id)
        pools.setdefault(candidate.stratum, []).append(candidate.id)
    return {stratum: pools[stratum] for stratum in sorted(pools)}


def _draw(rng: np.random.Generator, ids: list[int], count: int) -> list[int]:
    if count >= len(ids):
        return list(ids)
    picked = rng.choice(len(ids), size=count, replace=False)
    return sorted(ids[i] for i in picked)


def _take(rng: np.random.Generator, pool: list[int], count: int) -> list[int]:
    """Draw ``count`` ids from ``pool`` and remove them from it, so none is drawn twice."""
    taken = _draw(rng, pool, count)
    chosen = set(taken)
    pool[:] = [i for i in pool if i not in chosen]
    return taken


def _draw_controls(
    rng: np.random.Generator,
    quotas: Mapping[Stratum, int],
    real_pools: Mapping[Stratum, list[int]],
) -> tuple[list[Control], list[str]]:
    available = {stratum: list(ids) for stratum, ids in real_pools.items()}
    # Every stratum first takes what its own pool offers; only then do short strata borrow, so
    # a substitution never takes an image that its own stratum needed.
    controls = [
        Control(id=i, stratum=stratum)
        for stratum, quota in quotas.items()
        for i in _take(rng, available.get(stratum, []), quota)
    ]
    matched = {stratum: sum(1 for c in controls if c.stratum == stratum) for stratum in quotas}

    substitutions: list[str] = []
    for stratum, quota in quotas.items():
        missing = quota - matched[stratum]
        if missing <= 0:
            continue
        reason = _shortage_reason(stratum, own=matched[stratum], wanted=quota)
        for donor in _nearest_strata(stratum, [s for s, ids in available.items() if ids]):
            taken = _take(rng, available[donor], min(missing, len(available[donor])))
            controls += [
                Control(id=i, stratum=stratum, substituted_from=donor, reason=reason) for i in taken
            ]
            substitutions.append(
                f"{len(taken)} control(s) for {_label(stratum)} drawn from {_label(donor)}: "
                f"{reason}"
            )
            missing -= len(taken)
            if missing == 0:
                break
    return controls, substitutions


def _nearest_strata(stratum: Stratum, candidates: Sequence[Stratum]) -> list[Stratum]:
    diagnosis, fst = stratum

    def distance(other: Stratum) -> tuple[int, int, int, str]:
        other_diagnosis, other_fst = other
        if other_diagnosis == diagnosis:
            tier = 0
        elif other_fst == fst:
            tier = 1
        else:
            tier = 2
        return (tier, abs(other_fst - fst), other_fst, other_diagnosis)

    return sorted((s for s in candidates if s != stratum), key=distance)


def _shortage_reason(stratum: Stratum, *, own: int, wanted: int) -> str:
    if own == 0:
        return f"no real image of {_label(stratum)} left in the catalog"
    return f"only {own} real image(s) of {_label(stratum)} for {wanted} controls"


def _label(stratum: Stratum) -> str:
    diagnosis, fst = stratum
    return f"{diagnosis}/FST {fst_roman(fst)}"


def rater_order(
    items: Sequence[tuple[int, str]],
    *,
    seed: int,
    rater_index: int,
    max_run: int = 3,
    warmup: Sequence[int] = (),
    retest_share: float = 0.0,
    retest_gap: int = DEFAULT_RETEST_GAP,
) -> list[OrderEntry]:
    """One rater's sequence: the warm-ups in the given order, then every (item id, origin) once
    in a random order, with ``round(retest_share * len(items))`` of them shown again as retests.

    No origin comes in a run longer than ``max_run``, retests included, where the mix allows it.
    Where it does not (500 synthetic among 125 real cannot avoid runs of 4), an origin's runs are
    held to the shortest the mix allows, ``ceil(count / (others + 1))``; the order is then close
    to periodic, so a study that wants real randomness picks ``max_run`` above that bound.

    The order of origins is built one position at a time, choosing an origin in proportion to
    what is left among those that keep the rest completable, so it never needs retries. Retest
    copies are slots in that order, split between origins like the items, and each is paired
    with a showing of the same origin at least ``retest_gap`` positions earlier where the
    sequence is long enough.
    """
    if max_run < 1:
        raise ValueError(f"max_run must be at least 1, got {max_run}")
    if not 0.0 <= retest_share <= 1.0:
        raise ValueError(f"retest_share must be between 0 and 1, got {retest_share}")
    if retest_gap < 1:
        raise ValueError(f"retest_gap must be at least 1, got {retest_gap}")
    if seed < 0 or rater_index < 0:
        raise ValueError("the seed and the rater index must be non-negative")
    item_ids = [item_id for item_id, _ in items]
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("every study item must appear once in items")
    if len(set(warmup)) != len(warmup):
        raise ValueError("a warm-up item is listed twice")
    if overlap := set(warmup) & set(item_ids):
        raise ValueError(f"warm-up items are not scored; these are both: {sorted(overlap)}")

    rng = np.random.default_rng(np.random.SeedSequence([seed, rater_index, _ORDER_STREAM]))
    by_origin: dict[str, list[int]] = {}
    for item_id, origin in sorted(items):
        by_origin.setdefault(origin, []).append(item_id)
    origin_counts = {origin: len(ids) for origin, ids in by_origin.items()}
    retests = largest_remainder(round(retest_share * len(items)), origin_counts) if items else {}
    slot_counts = {origin: count + retests[origin] for origin, count in origin_counts.items()}
    pattern = _origin_pattern(rng, slot_counts, _run_caps(slot_counts, max_run))

    sequence: list[OrderEntry | None] = [None] * len(pattern)
    for origin, ids in by_origin.items():
        slots = [position for position, o in enumerate(pattern) if o == origin]
        shuffled = [ids[i] for i in rng.permutation(len(ids))]
        for position, entry in _fill_slots(rng, slots, shuffled, retests[origin], retest_gap):
            sequence[position] = entry
    return [OrderEntry(item_id, "warmup") for item_id in warmup] + [
        entry for entry in sequence if entry is not None
    ]


def _run_caps(counts: Mapping[str, int], max_run: int) -> dict[str, int]:
    """The longest run allowed per origin: ``max_run``, or the least the mix makes possible."""
    total = sum(counts.values())
    return {
        origin: max(max_run, math.ceil(count / (total - count + 1)))
        for origin, count in counts.items()
    }


def _completable(
    remaining: Mapping[str, int], caps: Mapping[str, int], last: str | None, run: int
) -> bool:
    """Whether the remaining items can follow a run of ``run`` x ``last`` within the caps.

    Each origin's items must fit into the runs the other origins' items can separate: one more
    run than there are other items, less what the current run has already used.
    """
    total = sum(remaining.values())
    for origin, count in remaining.items():
        room = caps[origin] * (total - count + 1)
        if origin == last:
            room -= run
        if count > room:
            return False
    return True


def _origin_pattern(
    rng: np.random.Generator, counts: Mapping[str, int], caps: Mapping[str, int]
) -> list[str]:
    remaining = dict(counts)
    pattern: list[str] = []
    last: str | None = None
    run = 0
    for _ in range(sum(counts.values())):
        options = []
        for origin, count in remaining.items():
            next_run = run + 1 if origin == last else 1
            if count == 0 or next_run > caps[origin]:
                continue
            remaining[origin] -= 1
            if _completable(remaining, caps, origin, next_run):
                options.append(origin)
            remaining[origin] += 1
        if not options:  # never reached with two origins; a safety net for unusual mixes
            options = [origin for origin, count in remaining.items() if count]
        weights = np.array([remaining[origin] for origin in options], dtype=float)
        origin = options[rng.choice(len(options), p=weights / weights.sum())]
        pattern.append(origin)
        remaining[origin] -= 1
        run = run + 1 if origin == last else 1
        last = origin
    return pattern


def _fill_slots(
    rng: np.random.Generator, slots: list[int], ids: list[int], retest_count: int, gap: int
) -> list[tuple[int, OrderEntry]]:
    """Put one origin's items (already shuffled) and its retest copies into its slots.

    Retest slots are drawn among those at least ``gap`` after the origin's first slot, then
    paired in ascending order with an unused earlier slot ``gap`` or more before them, else with
    any unused earlier slot, else with any unused slot (the earlier of the two is then the scored
    showing). The first-showing slots take the items in their shuffled order.
    """
    eligible = [s for s in slots if s >= slots[0] + gap]
    late = [s for s in slots if s < slots[0] + gap]
    retest_slots = [eligible[i] for i in rng.permutation(len(eligible))][:retest_count]
    retest_slots += late[::-1][: retest_count - len(retest_slots)]
    free = sorted(set(slots) - set(retest_slots))

    pairs: list[tuple[int, int]] = []  # (first showing, retest) slot positions
    for copy_slot in sorted(retest_slots):
        tiers = (
            [s for s in free if s <= copy_slot - gap],
            [s for s in free if s < copy_slot],
            free,
        )
        candidates = next(tier for tier in tiers if tier)
        partner = candidates[int(rng.integers(len(candidates)))]
        free.remove(partner)
        pairs.append((min(partner, copy_slot), max(partner, copy_slot)))

    first_showings = sorted(free + [first for first, _ in pairs])
    item_at = dict(zip(first_showings, ids, strict=True))
    entries = [(slot, OrderEntry(item_id, "scored")) for slot, item_id in item_at.items()]
    entries += [(copy, OrderEntry(item_at[first], "retest")) for first, copy in pairs]
    return entries
