"""Procedurally drawn lesion images for tests and the out-of-the-box demo.

No real dermatology image can be downloaded here, so the demo dataset is drawn: seven lesion
classes with distinct shape, colour and texture (``lesions.py``) on skin tones of all six
Fitzpatrick types (``skin_tones.py``), with skin texture, uneven lighting and optional hair.
They are meant to exercise the pipeline, not to teach a model dermatology.

Everything is a pure function of its seed (NumPy ``Generator`` streams keyed by seed, class,
type and purpose), so a test or a demo import reproduces the same pixels anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, cast

import cv2
import numpy as np
from PIL import Image

from fairskin.imaging.colour import lab_to_image
from fairskin.imaging.ita import fst_from_ita, ita_value
from fairskin.imaging.lesions import PAINTERS, Scene
from fairskin.imaging.painting import Lab, blend, draw_curve, quadratic_curve, smooth_noise
from fairskin.imaging.skin_tones import sample_skin_lab
from fairskin.labels import FST_TYPES, SEVEN_CLASSES, Diagnosis

DEMO_SIZE = 512
_MIN_SIZE = 64

# Independent random streams, so that e.g. adding hair leaves the rest of the image unchanged.
_STREAM_PERSON = 0  # skin colour and texture, the lesion itself
_STREAM_VIEW = 1  # framing, lighting and sensor grain of one photo of that lesion
_STREAM_HAIR = 2
_STREAM_ITEM = 3  # per-item choices in demo_items


class DemoItem(NamedTuple):
    """One demo image with the metadata an importer needs."""

    file_name: str
    diagnosis: Diagnosis
    fst: int
    group_id: str  # the lesion: several photos of one lesion share it (like HAM10000 lesion_id)
    image: Image.Image


@dataclass(frozen=True)
class ItaRecovery:
    """How often the ITA estimate of a demo image gives back the type it was drawn for."""

    n_images: int
    exact_rate: float
    within_one_rate: float
    # confusion[true - 1][estimated - 1] = number of images
    confusion: tuple[tuple[int, ...], ...]


def draw_lesion(
    diagnosis: Diagnosis | str,
    fst: int,
    *,
    seed: int,
    size: int = DEMO_SIZE,
    hair: bool = False,
    view: int = 0,
) -> Image.Image:
    """Draw one RGB ``size`` x ``size`` image of ``diagnosis`` on skin of Fitzpatrick type ``fst``.

    The same arguments always give the same pixels. ``view`` > 0 photographs the same lesion on
    the same person again: rotated, shifted, relit and with its own hair and grain.
    """
    dx = Diagnosis(diagnosis)
    if dx not in PAINTERS:
        raise ValueError(f"no demo look for {dx.value}; choose one of the seven classes")
    if fst not in FST_TYPES:
        raise ValueError(f"Fitzpatrick skin type must be 1-6, got {fst!r}")
    if seed < 0 or view < 0:
        raise ValueError("seed and view must be non-negative")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} px, got {size}")

    key = (seed, SEVEN_CLASSES.index(dx), fst)
    person = _stream(key, _STREAM_PERSON)
    skin = sample_skin_lab(fst, person).astype(np.float32)
    canvas = _skin_canvas(person, skin, size)
    centre = size / 2.0 + person.normal(0.0, 0.03 * size, 2)
    PAINTERS[dx](canvas, Scene(size, person, skin, centre))

    photo = _stream(key, _STREAM_VIEW, view)
    if view > 0:
        canvas = _reframe(canvas, photo)
    if hair:
        _draw_hair(canvas, _stream(key, _STREAM_HAIR, view))
    _light(canvas, photo)
    canvas[..., 0] += 0.8 * photo.standard_normal((size, size), dtype=np.float32)
    return Image.fromarray(lab_to_image(canvas))


def demo_items(
    per_class: int, seed: int, *, size: int = DEMO_SIZE, hair_fraction: float = 0.25
) -> Iterator[DemoItem]:
    """Yield ``per_class`` images of each of the seven classes, spread evenly over FST I-VI.

    When ``per_class`` is not a multiple of six, the extra images go to different types for
    different classes, so the 7 x 6 table stays within one image of balanced. Within a cell,
    images come in pairs that are two views of one lesion (same ``group_id``); about
    ``hair_fraction`` of the lesions have hair.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be non-negative, got {per_class}")
    if not 0.0 <= hair_fraction <= 1.0:
        raise ValueError(f"hair_fraction must be within [0, 1], got {hair_fraction}")
    for class_index, dx in enumerate(SEVEN_CLASSES):
        counts = _cell_counts(per_class, first=class_index % len(FST_TYPES))
        for fst, count in zip(FST_TYPES, counts, strict=True):
            for k in range(count):
                lesion, view = divmod(k, 2)
                choices = _stream((seed, class_index, fst), _STREAM_ITEM, lesion)
                lesion_seed = int(choices.integers(0, 2**31))
                hairy = bool(choices.random() < hair_fraction)
                group_id = f"demo-{dx.value.lower()}-fst{fst}-{lesion:04d}"
                image = draw_lesion(dx, fst, seed=lesion_seed, size=size, hair=hairy, view=view)
                yield DemoItem(f"{group_id}-v{view}.png", dx, fst, group_id, image)


def ita_recovery_report(
    n_per_cell: int, seed: int, *, size: int = DEMO_SIZE, hair: bool = False
) -> ItaRecovery:
    """Draw ``n_per_cell`` images per class x type and check ``fst_from_ita(ita_value(img))``.

    A sanity figure for the ITA estimator and the skin-tone table together: neither was fitted
    to the other, so this measures their agreement rather than restating it.
    """
    if n_per_cell <= 0:
        raise ValueError(f"n_per_cell must be positive, got {n_per_cell}")
    confusion = np.zeros((6, 6), dtype=np.int64)
    for class_index, dx in enumerate(SEVEN_CLASSES):
        for fst in FST_TYPES:
            for i in range(n_per_cell):
                image_seed = int(_stream((seed, class_index, fst), _STREAM_ITEM, i).integers(2**31))
                image = draw_lesion(dx, fst, seed=image_seed, size=size, hair=hair)
                estimated = fst_from_ita(ita_value(image))
                confusion[fst - 1, estimated - 1] += 1
    total = int(confusion.sum())
    truth, estimate = np.indices(confusion.shape)
    exact = int(confusion[truth == estimate].sum())
    within_one = int(confusion[np.abs(truth - estimate) <= 1].sum())
    return ItaRecovery(
        n_images=total,
        exact_rate=exact / total,
        within_one_rate=within_one / total,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )


def _stream(key: tuple[int, ...], purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([*key, purpose, index]))


def _cell_counts(per_class: int, *, first: int) -> list[int]:
    base, extra = divmod(per_class, len(FST_TYPES))
    rotated = [(i - first) % len(FST_TYPES) for i in range(len(FST_TYPES))]
    return [base + (1 if position < extra else 0) for position in rotated]


def _skin_canvas(rng: np.random.Generator, skin: Lab, size: int) -> Lab:
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = skin
    # Blotchy lightness at two scales and gentle redness/yellowness variation: real skin is
    # never one flat colour, and flat colour would make ITA trivially exact.
    canvas[..., 0] += 1.3 * smooth_noise(rng, size, 5) + 0.7 * smooth_noise(rng, size, 24)
    canvas[..., 1] += 0.6 * smooth_noise(rng, size, 6)
    canvas[..., 2] += 0.6 * smooth_noise(rng, size, 6)
    return canvas


def _reframe(canvas: Lab, rng: np.random.Generator) -> Lab:
    size = canvas.shape[0]
    angle = rng.uniform(0.0, 360.0)
    scale = rng.uniform(0.9, 1.1)
    matrix = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale)
    matrix[:, 2] += rng.normal(0.0, 0.03 * size, 2)
    return cast(
        "Lab",
        cv2.warpAffine(
            canvas, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        ),
    )


def _light(canvas: Lab, rng: np.random.Generator) -> None:
    """Uneven illumination: a linear fall-off across the frame and darker corners."""
    size = canvas.shape[0]
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle = rng.uniform(0.0, 2.0 * np.pi)
    slope = rng.uniform(0.0, 0.08)
    vignette = rng.uniform(0.0, 0.25)
    gradient = slope * (np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None])
    radius_sq = axis[None, :] ** 2 + axis[:, None] ** 2
    # Both terms average to zero over the frame, so lighting does not shift the mean skin tone.
    factor = 1.0 + gradient - vignette * (radius_sq - np.float32(1.0 / 6.0))
    canvas *= factor[..., None].astype(np.float32)


def _draw_hair(canvas: Lab, rng: np.random.Generator) -> None:
    size = canvas.shape[0]
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        start = rng.uniform(-0.1, 1.1, 2) * size
        angle = rng.uniform(0.0, 2.0 * np.pi)
        end = start + rng.uniform(0.25, 0.9) * size * np.array([np.cos(angle), np.sin(angle)])
        thickness = max(1, round(rng.uniform(1.0, 3.5) * size / DEMO_SIZE))
        draw_curve(mask, quadratic_curve(start, end, rng.uniform(-0.15, 0.15), 32), thickness)
    colour = np.array(
        [rng.uniform(8.0, 20.0), rng.uniform(1.0, 4.0), rng.uniform(2.0, 7.0)], dtype=np.float32
    )
    blend(canvas, mask.astype(np.float32) / 255.0 * 0.95, colour)
