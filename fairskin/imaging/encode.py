"""The one encoder for stored images: the lossless square PNG and its JPEG thumbnail.

Real derivatives (catalog preprocessing) and synthetic candidates (generation shards) are
stored with these same settings, so their files differ only in their pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

THUMBNAIL_SIZE = 160
THUMBNAIL_QUALITY = 85
# Level 1 is about 5x faster than Pillow's default 6 for about 12% larger files
# (docs/benchmarks.md, "Catalog import"); PNG stays lossless at every level.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class StoredImage:
    png: bytes
    thumbnail_jpeg: bytes
    width: int
    height: int


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_thumbnail(image: Image.Image) -> bytes:
    small = image.convert("RGB").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def encode_for_storage(image: Image.Image | np.ndarray) -> StoredImage:
    """The PNG and thumbnail of an image (a PIL image, or H×W×3 uint8 pixels)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected H×W×3 uint8 pixels, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    return StoredImage(
        png=encode_png(image),
        thumbnail_jpeg=encode_thumbnail(image),
        width=image.width,
        height=image.height,
    )
