"""Reading uploaded zip archives of images without trusting their member names or sizes.

Policy: members are matched to metadata rows by base name (the part after the last '/'),
because datasets are zipped with and without a top folder. Two members sharing a base name
are an error rather than a silent pick. Directory entries and macOS `__MACOSX/` resource
forks are skipped after their names have been checked like every other member.
"""

from __future__ import annotations

import os
import stat
import zipfile
from contextlib import nullcontext
from typing import IO

from fairskin.datasets.paths import unsafe_path_problem

ZipSource = str | os.PathLike[str] | IO[bytes] | zipfile.ZipFile

DEFAULT_MAX_RATIO = 100.0
# Small members can compress absurdly well (a blank PNG) without being dangerous; the total
# size cap already bounds them, so the ratio test starts at this size.
RATIO_CHECK_MIN_BYTES = 1 << 20
_CHUNK = 1 << 16


class ArchiveError(ValueError):
    """An archive, or one of its members, that is refused before anything is extracted."""

    def __init__(self, detail: str, *, member: str | None = None) -> None:
        self.detail = detail
        self.member = member
        super().__init__(f"zip member {member!r}: {detail}" if member is not None else detail)


def safe_zip_members(
    source: ZipSource,
    *,
    max_total_bytes: int,
    max_members: int,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> dict[str, zipfile.ZipInfo]:
    """Base name -> ZipInfo of every file member, after checking the whole archive.

    Sizes come from the central directory, which an attacker controls; `read_member` caps
    what is actually decompressed.
    """
    with _open(source) as archive:
        infos = archive.infolist()
    if len(infos) > max_members:
        raise ArchiveError(
            f"archive has {len(infos)} members, more than the limit of {max_members}",
            member=infos[max_members].filename,
        )
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        _check_name(info.filename)
        _check_kind(info)
        if info.is_dir() or info.filename.startswith("__MACOSX/"):
            continue
        total += info.file_size
        if total > max_total_bytes:
            raise ArchiveError(
                f"uncompressed total passes the limit of {max_total_bytes} bytes here",
                member=info.filename,
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
            raise ArchiveError(
                f"compression ratio {ratio:.0f}:1 exceeds {max_ratio:g}:1 (zip bomb?)",
                member=info.filename,
            )
        base_name = info.filename.rsplit("/", 1)[-1]
        if base_name in members:
            raise ArchiveError(
                f"same file name as {members[base_name].filename!r}; "
                "members are matched by base name, so it would be ambiguous",
                member=info.filename,
            )
        members[base_name] = info
    return members


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, max_bytes: int) -> bytes:
    """A member's bytes, stopping as soon as more than `max_bytes` come out."""
    if info.file_size > max_bytes:
        raise ArchiveError(
            f"declares {info.file_size} bytes, more than the limit of {max_bytes}",
            member=info.filename,
        )
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ArchiveError(
                        f"decompresses to more than the limit of {max_bytes} bytes",
                        member=info.filename,
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as exc:
        raise ArchiveError(f"cannot be read: {exc}", member=info.filename) from exc
    return b"".join(chunks)


def _open(source: ZipSource) -> zipfile.ZipFile | nullcontext[zipfile.ZipFile]:
    if isinstance(source, zipfile.ZipFile):
        return nullcontext(source)
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"not a readable zip archive: {exc}") from exc


def _check_name(name: str) -> None:
    problem = unsafe_path_problem(name)
    if problem:
        raise ArchiveError(problem, member=name)


def _check_kind(info: zipfile.ZipInfo) -> None:
    # Unix tools store the file mode in the high 16 bits; a symlink member could make a later
    # extraction write or read outside the target folder.
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise ArchiveError("is a symbolic link", member=info.filename)
    # Zero means "not recorded" (non-Unix tools, Python's writestr), not a special file.
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError("is not a regular file", member=info.filename)
    if info.flag_bits & 0x1:
        raise ArchiveError("is encrypted", member=info.filename)
