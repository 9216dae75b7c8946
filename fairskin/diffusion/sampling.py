"""Which training images make up each batch: FST-balanced or uniform, seeded, resumable."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

FST_GROUPS = {"1-3": (1, 2, 3), "4": (4,), "5-6": (5, 6)}


class BatchSampler:
    """Draws batches of item indices with replacement.

    Balanced: each slot first picks a skin-type group by its share (groups with no image are
    left out and the shares renormalised), then an image uniformly within the group. This is
    FairSkin's resampling: dark-skin images are seen far more often than their count.
    Uniform: every image equally likely. The random state is part of a checkpoint.
    """

    def __init__(
        self,
        fsts: Sequence[int],
        *,
        batch_size: int,
        seed: int,
        shares: dict[str, float] | None = None,
    ) -> None:
        if not fsts:
            raise ValueError("no training images")
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.groups: list[tuple[float, list[int]]] = []
        if shares:
            for name, members in FST_GROUPS.items():
                indices = [i for i, fst in enumerate(fsts) if fst in members]
                if indices and shares.get(name, 0) > 0:
                    self.groups.append((shares[name], indices))
        if not self.groups:
            self.groups = [(1.0, list(range(len(fsts))))]
        total = sum(share for share, _ in self.groups)
        self.weights = [share / total for share, _ in self.groups]

    def next_batch(self) -> list[int]:
        chosen = self.rng.choices(range(len(self.groups)), weights=self.weights, k=self.batch_size)
        return [self.rng.choice(self.groups[g][1]) for g in chosen]

    def state(self) -> tuple[Any, ...]:
        return self.rng.getstate()

    def restore(self, state: tuple[Any, ...]) -> None:
        self.rng.setstate(state)
