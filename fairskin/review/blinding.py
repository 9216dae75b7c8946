"""The one pipeline that makes every image a rater sees, real or synthetic.

A rater must judge realism from pixels alone. Files straight from a catalog or a generation
batch give their origin away in many other ways: PNG text chunks written by the generator, EXIF
from a clinical camera, an embedded ICC profile, JPEG comments, the container format, the
chroma subsampling or quantization tables of whoever encoded them, odd sizes, and (issue 15)
the byte length of a compressed file, which depends on content and encoding history. Every
served image is therefore decoded safely, made upright, converted to sRGB, centre-cropped and
resized, passed through one fixed JPEG round trip (the same lossy step for every origin, so
grid and double-compression statistics do not separate them), and written as an uncompressed
PNG of constant length and layout (``fairskin.review.stored_png``) from fresh pixels that carry
no metadata at all. ``inspect_served`` reads back what a curious rater could see.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

from fairskin.imaging.decode import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    decode_image_file,
)
from fairskin.imaging.resize import to_square
from fairskin.review.stored_png import encode_stored_png, png_layout, stored_png_length

DEFAULT_SIZE = 512
# The JPEG round trip every served image gets before the final lossless encode. Quality 90
# with 4:2:0 chroma is what clinical and dermoscopic JPEGs typically carry (cameras and the
# ISIC archive store quality 85-95, 4:2:0) and what studies served before issue 15.
DEFAULT_QUALITY = 90
SUBSAMPLING = "4:2:0"
SERVED_FORMAT = "PNG"
SERVED_CONTENT_TYPE = "image/png"

_SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length
_MARKER_NAMES = {
    0xC4: "DHT",
    0xC8: "JPG",
    0xCC: "DAC",
    0xD8: "SOI",
    0xD9: "EOI",
    0xDA: "SOS",
    0xDB: "DQT",
    0xDD: "DRI",
    0xFE: "COM",
}


def blinded_derivative(
    source: bytes | str | os.PathLike[str],
    *,
    size: int = DEFAULT_SIZE,
    quality: int = DEFAULT_QUALITY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """The PNG a rater is shown for ``source`` (image bytes, or a path to an image file).

    Decoding goes through ``fairskin.imaging.decode``: the pixel limit is checked before any
    pixel is decompressed, corrupt or truncated files raise ``ImageDecodeError`` (a ValueError),
    EXIF orientation is applied, alpha is flattened onto white, 16-bit and palette images become
    8-bit RGB, and an embedded ICC profile is converted to sRGB (no profile means sRGB). The
    image is centre-cropped to a square and resized with Lanczos (``to_square``). Its pixels then
    go through one JPEG round trip (baseline, ``quality``, 4:2:0, standard tables) on the
    ``size`` grid, whatever the origin, and the decoded pixels are written as an uncompressed
    PNG (``encode_stored_png``): always ``served_length(size)`` bytes, with one layout and no
    metadata. The same input always gives the same bytes.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1-95, got {quality}")
    if isinstance(source, bytes | bytearray | memoryview):
        image = decode_image(bytes(source), max_pixels=max_pixels)
    else:
        image = decode_image_file(source, max_pixels=max_pixels)

    square = to_square(image, size)
    # Pillow carries ``info`` (a JPEG comment, for one) through convert/crop/resize; an image
    # made from the raw pixels has nothing to carry.
    pixels_only = Image.frombytes("RGB", square.size, square.tobytes())
    buffer = io.BytesIO()
    pixels_only.save(
        buffer,
        "JPEG",
        quality=quality,
        subsampling=SUBSAMPLING,
        optimize=False,
        progressive=False,
    )
    with Image.open(io.BytesIO(buffer.getvalue()), formats=["JPEG"]) as round_trip:
        pixels = np.asarray(round_trip.convert("RGB"), dtype=np.uint8)
    return encode_stored_png(pixels)


def served_length(size: int = DEFAULT_SIZE) -> int:
    """The byte length of every served image of a study shown at ``size`` px."""
    return stored_png_length(size, size)


def inspect_served(data: bytes) -> dict[str, Any]:
    """What the bytes of a served image tell a reader beyond its pixels.

    Keys: ``format``, ``size``, ``mode``, ``subsampling`` ("4:2:0", ... or None),
    ``quantization_sha256``, ``progressive``, ``dpi``, ``has_exif``, ``has_icc``,
    ``has_comment``, ``markers`` (every JPEG segment or PNG chunk in file order),
    ``metadata_markers`` (the APPn and COM segments, or the ancillary PNG chunks, among them),
    ``header_sha256`` (JPEG: hash of every byte before the entropy-coded data; PNG: hash of the
    whole layout but pixels and checksums, see ``png_layout``: equal hashes mean nothing but the
    pixels tells two files apart), ``payload_bytes`` (the entropy-coded data or IDAT length),
    ``stored`` (a PNG whose deflate blocks are all uncompressed) and ``trailing_bytes`` after
    the end-of-image marker or IEND. JPEG-only keys are None for other formats. Pixels are not
    decoded.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Exception as exc:  # Pillow's plugins raise many exception types on bad input.
        raise ImageDecodeError(f"served image: not a readable image ({exc})") from exc

    report: dict[str, Any] = {
        "format": image.format,
        "size": image.size,
        "mode": image.mode,
        "subsampling": None,
        "quantization_sha256": None,
        "progressive": bool(image.info.get("progressive") or image.info.get("progression")),
        "dpi": image.info.get("dpi"),
        "has_exif": bool(image.info.get("exif")),
        "has_icc": bool(image.info.get("icc_profile")),
        "has_comment": bool(image.info.get("comment")),
        "markers": [],
        "metadata_markers": [],
        "header_sha256": None,
        "payload_bytes": None,
        "stored": False,
        "trailing_bytes": 0,
    }
    if image.format == "PNG":
        layout = png_layout(data)
        report.update(
            markers=[kind for kind, _ in layout["chunks"]],
            metadata_markers=layout["ancillary"],
            header_sha256=layout["structure_sha256"],
            payload_bytes=layout["payload_bytes"],
            stored=layout["stored"],
            trailing_bytes=layout["trailing_bytes"],
        )
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        markers, header_end, payload_end, trailing = _scan_jpeg(data)
        tables = sorted((index, list(table)) for index, table in image.quantization.items())
        report.update(
            subsampling=_SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(image)),
            quantization_sha256=hashlib.sha256(repr(tables).encode()).hexdigest(),
            progressive=report["progressive"] or "SOF2" in markers,
            markers=markers,
            metadata_markers=[m for m in markers if m.startswith("APP") or m == "COM"],
            header_sha256=hashlib.sha256(data[:header_end]).hexdigest(),
            payload_bytes=payload_end - header_end,
            trailing_bytes=trailing,
        )
    return report


def _scan_jpeg(data: bytes) -> tuple[list[str], int, int, int]:
    """(segment names in order, end of the first scan header, start of EOI, bytes after EOI)."""
    if data[:2] != b"\xff\xd8":
        raise ImageDecodeError("served image: a JPEG must start with the SOI marker")
    markers = ["SOI"]
    header_end = 0
    position = 2
    while position < len(data):
        if data[position] != 0xFF:
            raise ImageDecodeError(f"served image: expected a JPEG marker at byte {position}")
        while position + 1 < len(data) and data[position + 1] == 0xFF:  # fill bytes
            position += 1
        if position + 1 >= len(data):
            break
        code = data[position + 1]
        name = _marker_name(code)
        markers.append(name)
        if code == 0xD9:
            return markers, header_end, position, len(data) - position - 2
        if code in _STANDALONE_MARKERS:
            position += 2
            continue
        if position + 4 > len(data):
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        position += 2 + length
        if code == 0xDA:
            header_end = header_end or position
            position = _end_of_entropy_data(data, position)
    raise ImageDecodeError("served image: the JPEG ends without an EOI marker")


def _end_of_entropy_data(data: bytes, position: int) -> int:
    """The position of the first marker after entropy-coded data (stuffed FF00 and RST skipped)."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return len(data)
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            position += 2
        elif following == 0xFF:
            position += 1
        else:
            return position


def _marker_name(code: int) -> str:
    if code in _MARKER_NAMES:
        return _MARKER_NAMES[code]
    if 0xE0 <= code <= 0xEF:
        return f"APP{code - 0xE0}"
    if 0xC0 <= code <= 0xCF:
        return f"SOF{code - 0xC0}"
    return f"0x{code:02X}"


def served_encoding_lines(audit: dict[str, Any], lengths: list[int]) -> list[str]:
    """What raters were shown, for a release's datasheet: the format, size and encoding chain
    of the study's served files (from its gate's blinding audit) and their byte lengths."""
    formats = audit.get("formats") or []
    dimensions = audit.get("dimensions") or []
    size = " and ".join(f"{w} x {h} px" for w, h in dimensions) or "unknown size"
    distinct = sorted(set(lengths))
    if distinct and len(distinct) == 1:
        length = f"Every served file was {distinct[0]:,} bytes long: file size told raters nothing."
    elif distinct:
        length = f"Served file sizes varied ({distinct[0]:,}-{distinct[-1]:,} bytes)."
    else:
        length = "No served file sizes are recorded."
    if formats == ["PNG"]:
        chain = (
            f"Every image, real or synthetic, was decoded, made upright, converted to sRGB, "
            f"centre-cropped and resized to {size} (Lanczos), passed through one JPEG round "
            f"trip (baseline, quality {DEFAULT_QUALITY}, 4:2:0 chroma, standard tables) and "
            "served as an uncompressed PNG (stored deflate blocks, no metadata chunks)."
        )
    else:
        chain = (
            f"Images were served as {', '.join(formats) or 'unknown format'} at {size}, "
            "re-encoded from pixels with fixed settings and no metadata (a study prepared "
            "before uncompressed serving)."
        )
    failures = audit.get("encoding_failures")
    if failures is None:
        verdict = "The blinding audit of this study predates the encoding-failure test."
    elif failures:
        verdict = "The blinding audit found encoding signals: " + "; ".join(failures) + "."
    else:
        verdict = (
            "The blinding audit found no encoding signal separating real from synthetic "
            f"(permutation tests at alpha {audit.get('alpha')})."
        )
    return [chain, length, verdict]
