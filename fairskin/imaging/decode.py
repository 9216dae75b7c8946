"""Safe decoding of untrusted image bytes into an 8-bit RGB Pillow image.

Uploaded and imported files are untrusted: a few hundred bytes can declare a 100,000 x 100,000
image (a decompression bomb), and real datasets contain truncated downloads. Every failure is
reported as one exception type, ``ImageDecodeError``, whose message names the file, so an importer
can record it against the row and carry on.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

DEFAULT_MAX_PIXELS = 40_000_000

# The formats dermatology datasets and clinical cameras actually produce. Refusing the rest
# keeps Pillow's rarely exercised parsers (PSD, EPS via Ghostscript, ...) away from uploads.
# MPO (multi-picture JPEG from phones) is opened by the JPEG entry.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_SRGB_PROFILE = ImageCms.createProfile("sRGB")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can safely decode (corrupt, truncated, too large, empty)."""


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = ""
) -> Image.Image:
    """Decode ``data`` into an RGB image, upright according to its EXIF orientation.

    The declared width x height is checked against ``max_pixels`` after reading only the header,
    before any pixel is decompressed. Palette, alpha (flattened onto white, as a browser shows
    it), grayscale, CMYK and 16-bit images all come back as 8-bit RGB; an embedded ICC profile is
    converted to sRGB so colour measurements (ITA) mean the same thing for every file.
    """
    label = repr(name) if name else "image"
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not data:
        raise ImageDecodeError(f"{label}: the file is empty (0 bytes)")

    # Pillow signals bombs with a warning below its hard limit; turn that into an exception
    # inside this block only, so the caller's warning filters are left alone.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(
                f"{label}: declared size exceeds the pixel limit (possible decompression bomb)"
            ) from exc
        except Exception as exc:  # Pillow's plugins raise many exception types on bad input.
            raise ImageDecodeError(
                f"{label}: not a readable image (expected one of {', '.join(ALLOWED_FORMATS)})"
            ) from exc

        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError(f"{label}: image has zero size ({width}x{height})")
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"{label}: {width}x{height} = {width * height:,} pixels exceeds the pixel limit "
                f"of {max_pixels:,} (possible decompression bomb)"
            )

        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(
                f"{label}: a frame exceeds the pixel limit (possible decompression bomb)"
            ) from exc
        except Exception as exc:  # truncated data surfaces as OSError, SyntaxError, ...
            raise ImageDecodeError(f"{label}: image data is truncated or corrupt ({exc})") from exc

        return _to_rgb(_upright(image), label)


def decode_image_file(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Read and decode an image file; errors name the file. A missing file is FileNotFoundError."""
    path = Path(path)
    return decode_image(path.read_bytes(), max_pixels=max_pixels, name=str(path))


def _upright(image: Image.Image) -> Image.Image:
    # A damaged EXIF block must not cost us an otherwise good image: keep it as stored.
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        image = _flatten_on_white(image)
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return _high_bit_depth_to_rgb(image)

    converted = _apply_icc_profile(image)
    if converted is not None:
        return converted
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"{label}: unsupported colour mode {image.mode!r}") from exc


def _flatten_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    flattened = Image.alpha_composite(background, rgba).convert("RGB")
    if "icc_profile" in image.info:
        flattened.info["icc_profile"] = image.info["icc_profile"]
    return flattened


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own convert() clips 16-bit values above 255 to white; scale the full range instead.
    # "I" (32-bit int) is what 16-bit PNG/TIFF grayscale opens as in some Pillow versions, so it
    # is read on the same 0-65535 scale; "F" (float TIFF) is taken to be 0-1.
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scaled = values * 255.0
    else:
        scaled = values / 257.0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _apply_icc_profile(image: Image.Image) -> Image.Image | None:
    """The image converted from its embedded profile to sRGB, or None to fall back to Pillow."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK", "L"):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        return ImageCms.profileToProfile(image, profile, _SRGB_PROFILE, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken profile is metadata damage, not pixel damage: treat the pixels as sRGB,
        # as browsers do.
        return None
