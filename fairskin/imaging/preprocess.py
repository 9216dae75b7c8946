"""The catalog's derivative pipeline: decode, square 512 px, optional hair removal, ITA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fairskin.imaging.decode import DEFAULT_MAX_PIXELS, decode_image
from fairskin.imaging.encode import encode_for_storage
from fairskin.imaging.hair import remove_hair
from fairskin.imaging.ita import ITA_METHOD, fst_from_ita, ita_value
from fairskin.imaging.resize import to_square


@dataclass(frozen=True)
class Derivative:
    png: bytes  # the square derivative, lossless
    thumbnail_jpeg: bytes
    ita: float | None  # None when the image shows no usable skin
    fst_ita: int | None
    ita_method: str
    hair_removed: bool


def preprocess_image(
    data: bytes,
    *,
    name: str = "",
    size: int = 512,
    hair_removal: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Derivative:
    """Make the square derivative of one image file and measure its skin tone.

    Hair is removed after resizing, where the DullRazor kernel sizes are calibrated, and ITA
    is measured on the hair-free derivative so dark hair does not pull the angle down.
    """
    square = to_square(decode_image(data, max_pixels=max_pixels, name=name), size)
    if hair_removal:
        square = remove_hair(square)
    try:
        ita: float | None = ita_value(square)
        fst = fst_from_ita(cast(float, ita))
    except ValueError:
        ita, fst = None, None
    stored = encode_for_storage(square)
    return Derivative(
        png=stored.png,
        thumbnail_jpeg=stored.thumbnail_jpeg,
        ita=ita,
        fst_ita=fst,
        ita_method=ITA_METHOD,
        hair_removed=hair_removal,
    )
