"""The served container: an uncompressed PNG whose length and layout do not depend on content.

A compressed file's length is a function of what it shows and of how it was encoded before, so
a rater who only reads Content-Length could tell origins apart (issue 15: JPEG sizes separated
real from synthetic perfectly). Every served image is therefore written here as an 8-bit RGB
PNG with a fixed IHDR, one IDAT holding a zlib stream of *stored* (uncompressed) deflate
blocks, filter type 0 on every row and IEND, and no ancillary chunk. Its byte length is
``stored_png_length(width, height)`` whatever the pixels are; the only bytes that differ
between two images of one size are the pixels and the checksums computed from them (the zlib
Adler-32 and the chunk CRCs), which a parser can recompute from the pixels and so tell nothing
else. ``png_layout`` reads that structure back from any PNG.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary, "fastest" level bits
MAX_STORED_BLOCK = 65_535
_CHUNK_OVERHEAD = 12  # length, type and CRC


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def stored_png_length(width: int, height: int) -> int:
    """The byte length of every ``encode_stored_png`` output of this size."""
    raw = height * (1 + 3 * width)
    blocks = max(1, -(-raw // MAX_STORED_BLOCK))
    idat = len(ZLIB_HEADER) + 5 * blocks + raw + 4
    return len(PNG_SIGNATURE) + (_CHUNK_OVERHEAD + 13) + (_CHUNK_OVERHEAD + idat) + _CHUNK_OVERHEAD


def encode_stored_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """An (height, width, 3) uint8 RGB array as an uncompressed PNG of constant layout."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if width < 1 or height < 1:
        raise ValueError(f"image has zero size ({width}x{height})")
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    raw = rows.tobytes()
    parts = [ZLIB_HEADER]
    for start in range(0, len(raw), MAX_STORED_BLOCK):
        block = raw[start : start + MAX_STORED_BLOCK]
        final = 1 if start + MAX_STORED_BLOCK >= len(raw) else 0
        parts.append(bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    parts.append(struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def png_layout(data: bytes) -> dict[str, Any]:
    """Everything in a PNG except its pixels and the checksums computed from them.

    Keys: ``chunks`` ([type, length] in file order), ``ancillary`` (chunk types whose first
    letter is lower case: text, time, gamma, ICC...), ``ihdr`` (hex), ``zlib_header`` (hex),
    ``deflate_blocks`` ([final, type, length] while the blocks are stored; a compressed block
    ends the list, as its length depends on content), ``stored`` (every block is stored),
    ``row_filters`` (the distinct filter bytes, when stored), ``payload_bytes`` (the IDAT data
    length), ``trailing_bytes`` (after IEND) and ``structure_sha256``, a hash of all of the
    above: two files with the same hash differ only in pixels and checksums.
    """
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG: the signature is missing")
    chunks: list[list[Any]] = []
    ihdr = b""
    idat = bytearray()
    position = 8
    trailing = 0
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8].decode("latin-1")
        body = data[position + 8 : position + 8 + length]
        chunks.append([kind, length])
        if kind == "IHDR":
            ihdr = body
        elif kind == "IDAT":
            idat += body
        position += _CHUNK_OVERHEAD + length
        if kind == "IEND":
            trailing = max(0, len(data) - position)
            break
    blocks, raw = _deflate_blocks(bytes(idat))
    stored = bool(blocks) and all(block[1] == 0 for block in blocks) and bool(blocks[-1][0])
    filters: list[int] = []
    if stored and len(ihdr) == 13:
        width = int.from_bytes(ihdr[0:4], "big")
        stride = 1 + 3 * width
        filters = sorted(set(raw[::stride])) if stride > 1 else []
    layout: dict[str, Any] = {
        "chunks": chunks,
        "ancillary": [kind for kind, _ in chunks if kind[:1].islower()],
        "ihdr": ihdr.hex(),
        "zlib_header": bytes(idat[:2]).hex(),
        "deflate_blocks": blocks,
        "stored": stored,
        "row_filters": filters,
        "payload_bytes": len(idat),
        "trailing_bytes": trailing,
    }
    layout["structure_sha256"] = hashlib.sha256(
        json.dumps(layout, sort_keys=True).encode()
    ).hexdigest()
    return layout


def _deflate_blocks(stream: bytes) -> tuple[list[list[int]], bytes]:
    """The zlib stream's deflate blocks as [final, type, length] while they are stored, and
    the raw bytes they hold. A compressed block is listed with length -1 and ends the walk."""
    blocks: list[list[int]] = []
    raw = bytearray()
    position = 2
    while position < len(stream):
        header = stream[position]
        final, kind = header & 1, (header >> 1) & 3
        if kind != 0 or position + 5 > len(stream):
            blocks.append([final, kind, -1])
            break
        length = int.from_bytes(stream[position + 1 : position + 3], "little")
        blocks.append([final, kind, length])
        raw += stream[position + 5 : position + 5 + length]
        position += 5 + length
        if final:
            break
    return blocks, bytes(raw)
