"""Seeded train/val/test splits, stratified by diagnosis x skin type, grouped by lesion.

Every image of a group (HAM10000 lesion, a patient) lands in the same split, so no lesion is
seen in training and again in testing. Groups are the unit of assignment: each group takes the
stratum of its most common (diagnosis, FST) cell, groups are shuffled within each stratum with
the seed, and each goes to the split that is furthest below its target share, counting both
the stratum's images and all images assigned so far. The stratum term keeps large cells
stratified; the global term spreads small cells (a single lesion each) over the splits instead
of sending every one of them to train. The result depends only on the items and the seed.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class SplitItem:
    key: Hashable  # the image's identity (primary key)
    group: str  # lesion/patient id; an image without one is its own group
    stratum: Hashable  # e.g. (diagnosis, fst)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions):
        raise ValueError("split fractions must be three non-negative numbers (train, val, test)")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {sum(fractions):.4f}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def assign_splits(
    items: Iterable[SplitItem],
    *,
    seed: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[Hashable, str]:
    """Map each item's key to 'train', 'val' or 'test'."""
    targets = check_fractions(fractions)
    members: dict[str, list[SplitItem]] = defaultdict(list)
    for item in items:
        members[item.group].append(item)

    groups_by_stratum: dict[Hashable, list[str]] = defaultdict(list)
    for group, group_items in members.items():
        cells = Counter(i.stratum for i in group_items)
        # Ties broken by repr so the choice does not depend on input order.
        stratum = max(cells, key=lambda s: (cells[s], repr(s)))
        groups_by_stratum[stratum].append(group)

    rng = random.Random(seed)
    assignment: dict[Hashable, str] = {}
    overall = [0, 0, 0]
    strata = sorted(groups_by_stratum, key=repr)
    rng.shuffle(strata)
    for stratum in strata:
        groups = sorted(groups_by_stratum[stratum])
        rng.shuffle(groups)
        total = sum(len(members[g]) for g in groups)
        filled = [0, 0, 0]
        for group in groups:
            size = len(members[group])
            seen = sum(overall) + size

            def shortfall(
                s: int, *, seen: int = seen, total: int = total, filled: list[int] = filled
            ) -> float:
                return (targets[s] * total - filled[s]) + (targets[s] * seen - overall[s])

            chosen = max(range(len(SPLITS)), key=lambda s: (shortfall(s), -s))
            filled[chosen] += size
            overall[chosen] += size
            for item in members[group]:
                assignment[item.key] = SPLITS[chosen]
    return assignment
