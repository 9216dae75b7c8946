"""Reference images for img2img generation: which catalog image each stratum starts from, and
whether a file can serve as one.

A batch given reference images (`generation.services.batch_create`) generates every candidate
img2img from its stratum's reference at the batch's strength (`BatchGenerator.generate`). The
rule a stratum's reference is drawn by, written once here (:func:`assign_references`):

1. the references of the stratum's diagnosis and Fitzpatrick type;
2. if there are none, those of its diagnosis with the nearest known type (a tie goes to the
   darker type, the minority the plan over-represents); an image whose type is unknown or a
   range counts only here, as the farthest;
3. if its diagnosis has no reference at all, the batch is refused.

Among the candidates of the chosen rank, one is drawn from the batch seed and the stratum's
key alone: the same batch settings always give the same references, whatever else the batch
holds. A file serves as a reference if it decodes, is square and at least the batch's size
(a larger one is downscaled with Lanczos; a smaller one would have to be upscaled and is
refused). Torch-free and Django-free.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ReferenceImageError(ValueError):
    """A reference image cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ReferenceCandidate:
    image_id: int
    diagnosis: str
    fst: int | None  # None: unknown, or a range rather than one type


def check_strength(strength: object, steps: int) -> str | None:
    """Why ``strength`` cannot drive an img2img generation of ``steps`` steps, or None.

    diffusers runs int(steps * strength) denoising steps from the reference noised that far:
    a strength in (0, 1] that leaves at least one step."""
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        return f"the reference strength must be a number, got {strength!r}"
    if not 0 < strength <= 1:
        return f"the reference strength must be in (0, 1], got {strength!r}"
    if int(steps * strength) < 1:
        return (
            f"a reference strength of {strength:g} with {steps} steps runs no denoising step; "
            f"use at least {1 / steps:.3g} or more steps"
        )
    return None


def _rank(candidate: ReferenceCandidate, fst: int) -> tuple[int, int]:
    """Lower is better: the same type, then the nearest (the darker on a tie), unknown last."""
    if candidate.fst is None:
        return (10, 0)
    return (abs(candidate.fst - fst), 0 if candidate.fst >= fst else 1)


def assign_references(
    strata: Sequence[tuple[str, int]], candidates: Sequence[ReferenceCandidate], seed: int
) -> dict[str, int]:
    """Each stratum's reference image id, keyed "DX:FST" (the plan's keys); raises
    ReferenceImageError naming every stratum whose diagnosis has no reference."""
    out: dict[str, int] = {}
    missing = []
    for dx, fst in strata:
        same = [c for c in candidates if c.diagnosis == dx]
        if not same:
            missing.append(f"{dx} FST {fst}")
            continue
        best = min(_rank(c, fst) for c in same)
        pool = sorted(c.image_id for c in same if _rank(c, fst) == best)
        out[f"{dx}:{fst}"] = random.Random(f"{seed}:{dx}:{fst}").choice(pool)
    if missing:
        given = sorted({c.diagnosis for c in candidates})
        raise ReferenceImageError(
            f"no reference image for {', '.join(missing)}: a stratum draws its reference from "
            f"images of its own diagnosis, and the references given are of "
            f"{', '.join(given) or 'no diagnosis'}"
        )
    return out


def load_reference(path: str | Path, size: int, *, image_id: int | str = "?") -> np.ndarray:
    """The reference's pixels as uint8 (size, size, 3); ReferenceImageError if the file cannot
    serve (unreadable or corrupt, not square, smaller than ``size``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ReferenceImageError(
            f"reference image {image_id}: its preprocessed file {str(path)!r} cannot be read "
            f"({exc.__class__.__name__}: {exc})"
        ) from exc
    width, height = rgb.size
    if width != height:
        raise ReferenceImageError(
            f"reference image {image_id} is {width}x{height}; references must be square"
        )
    if width < size:
        raise ReferenceImageError(
            f"reference image {image_id} is {width}x{height}, smaller than the batch's "
            f"{size}x{size}; it would have to be upscaled"
        )
    if width != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.array(rgb, dtype=np.uint8)
