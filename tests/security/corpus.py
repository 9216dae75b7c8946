"""The hostile-input corpus, made in code (nothing large is committed): metadata CSVs, image
files and zip archives an attacker or a broken export could hand to the importer.

Each entry is bytes plus what the user must be told. `write_corpus(folder)` writes them all
as files, for trying them by hand on the admin's upload form or with `import_dataset`.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class Hostile:
    data: bytes
    message: str  # what the refusal must say (a substring)


# --- metadata CSVs (generic layout: file, diagnosis, fst, ...) -----------------------------

WIDE = 10_000
CSVS = {
    "formula in the file column (=HYPERLINK)": Hostile(
        b'file,diagnosis\n"=HYPERLINK(""https://evil.example/x"",""a.png"")",MEL\n',
        "unsafe file name",
    ),
    "formula in the diagnosis column": Hostile(
        b"file,diagnosis\na.png,=1+cmd|' /C calc'!A0\n", "diagnosis must be one of"
    ),
    "formula in the fst column": Hostile(b"file,diagnosis,fst\na.png,MEL,@SUM(1+5)\n", "fst"),
    "NUL byte in a file name": Hostile(
        b"file,diagnosis\na.png,MEL\nb\x00.png,NV\n",
        "data row 2 (line 3): column 'file' contains a NUL",
    ),
    "NUL byte in a metadata column": Hostile(
        b"file,diagnosis,site\na.png,MEL,ba\x00ck\n", "column 'site' contains a NUL byte"
    ),
    "NUL byte in the group id": Hostile(
        b"file,diagnosis,group_id\na.png,MEL,p\x001\n", "column 'group_id' contains a NUL byte"
    ),
    "NUL byte in a column name": Hostile(
        b"file,diagnosis,si\x00te\na.png,MEL,back\n", "a column name contains a NUL byte"
    ),
    "Latin-1 instead of UTF-8": Hostile(
        "file,diagnosis,site\na.png,MEL,épaule\n".encode("latin-1"), "not UTF-8 text"
    ),
    "UTF-16 with a byte-order mark": Hostile(
        "file,diagnosis\na.png,MEL\n".encode("utf-16"), "not UTF-8 text"
    ),
    f"{WIDE} columns, rows shorter than the header": Hostile(
        ("file,diagnosis," + ",".join(f"c{i}" for i in range(WIDE - 2)) + "\na.png,MEL\n").encode(),
        f"has 2 fields but the header has {WIDE}",
    ),
    "no header row (data in the first line)": Hostile(b"a.png,MEL,5\nb.png,NV,3\n", "missing"),
    "duplicate column names": Hostile(
        b"file,diagnosis,file\na.png,MEL,b.png\n", "column names repeated: 'file'"
    ),
    "a 200 KB field": Hostile(
        b"file,diagnosis,note\na.png,MEL," + b"x" * 200_000 + b"\n", "field larger than field limit"
    ),
    "an unterminated quote": Hostile(b'file,diagnosis\na.png,"MEL\nb.png,NV\n', "not valid CSV"),
}


# --- image files ----------------------------------------------------------------------------


def _noise(fmt: str, size=(96, 96)) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a few bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_bomb(side: int = 10_000) -> bytes:
    """A real, complete 1-bit PNG of side x side pixels: about 12 KB that decode to 100 MP."""
    buffer = io.BytesIO()
    PILImage.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _tga() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), (200, 100, 50)).save(buffer, format="TGA")
    return buffer.getvalue()


def images() -> dict[str, Hostile]:
    png, jpeg = _noise("PNG"), _noise("JPEG")
    return {
        "truncated PNG": Hostile(png[: len(png) // 2], "truncated or corrupt"),
        "truncated JPEG": Hostile(jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "PNG header declaring 60000 x 60000": Hostile(png_declaring(60_000, 60_000), "pixel limit"),
        "PNG decompression bomb (10000 x 10000, 12 KB)": Hostile(png_bomb(), "pixel limit"),
        "empty file": Hostile(b"", "the file is empty"),
        "SVG with a script, named .png": Hostile(
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "not a readable image",
        ),
        "TGA (a format outside the allow-list)": Hostile(_tga(), "not a readable image"),
    }


# --- zip archives -----------------------------------------------------------------------------


def zip_of(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def archives() -> dict[str, Hostile]:
    png = _noise("PNG", size=(16, 16))
    return {
        "member path ../../etc/cron.d/a.png": Hostile(
            zip_of([("../../etc/cron.d/a.png", png)]), "'..' component"
        ),
        "absolute member path /etc/a.png": Hostile(zip_of([("/etc/a.png", png)]), "absolute path"),
        "symlink member to /etc/passwd": Hostile(
            zip_of([_symlink("a.png", "/etc/passwd")]), "symbolic link"
        ),
        "zip bomb (4 MiB of zeros in 4 KB)": Hostile(
            zip_of([("a.png", bytes(4 << 20))]), "zip bomb"
        ),
        "a PNG renamed .zip": Hostile(png, "is not a zip archive"),
    }


def write_corpus(folder: Path) -> list[Path]:
    """Every entry as a file under `folder` (csv/, images/, zips/); returns the paths."""
    written = []
    groups = {"csv": (CSVS, ".csv"), "images": (images(), ".png"), "zips": (archives(), ".zip")}
    for group, (entries, suffix) in groups.items():
        (folder / group).mkdir(parents=True, exist_ok=True)
        for name, entry in entries.items():
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            path = folder / group / f"{slug}{suffix}"
            path.write_bytes(entry.data)
            written.append(path)
    return written
