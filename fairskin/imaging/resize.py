"""Square derivatives of arbitrary photos (the 512 x 512 images training and review use)."""

from __future__ import annotations

from PIL import Image

DEFAULT_SIZE = 512


def centre_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred square in a width x height image.

    When the surplus is odd, the extra pixel is dropped from the right/bottom edge.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def to_square(img: Image.Image, size: int = DEFAULT_SIZE) -> Image.Image:
    """Centre-crop ``img`` to a square on its short side, then resize to ``size`` x ``size``.

    Policy: crop, never pad. Dermoscopy and clinical photos are framed with the lesion in the
    middle, so the centred square keeps the lesion and loses only surrounding skin; padding would
    add flat borders that no real photo has and that a generator trained on the result would
    learn to draw. Resampling is Lanczos (sharp, little aliasing when shrinking large photos;
    smaller images are enlarged the same way). The crop and filter are fixed, so the same input
    always gives the same pixels. The mode of ``img`` is kept.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    # Crop first, so nothing outside the square can bleed into the edge pixels through the
    # filter's support (resize(box=...) would read past the box).
    square = img.crop(centre_crop_box(*img.size))
    return square.resize((size, size), Image.Resampling.LANCZOS)
