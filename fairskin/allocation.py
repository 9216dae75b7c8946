"""Whole-number shares of a total, used by generation quotas and study sampling alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")


def largest_remainder(total: int, weights: Mapping[K, float]) -> dict[K, int]:
    """Integer shares of ``total`` proportional to ``weights``, summing exactly to ``total``.

    Ties in the remainders go to the key that sorts first, so the result is deterministic.
    """
    weight_sum = sum(weights.values())
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    shares = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), str(k)))[:left]:
        shares[key] += 1
    return shares
