"""Where an import finds its image files: a folder or a zip archive, matched by base name."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO, Protocol

from fairskin.datasets.archive import ArchiveError, read_member, safe_zip_members

DEFAULT_MAX_FILE_BYTES = 64 << 20
DEFAULT_MAX_ARCHIVE_BYTES = 64 << 30
DEFAULT_MAX_MEMBERS = 500_000


class ImageSource(Protocol):
    description: str

    def read(self, file_name: str) -> bytes | None:
        """The file's bytes, or None when the source has no file of that base name."""

    def close(self) -> None: ...


class FolderImages:
    """Image files anywhere under a folder. Links that lead outside it are refused."""

    def __init__(
        self, root: str | os.PathLike[str], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ArchiveError(f"image folder {str(root)!r} does not exist")
        self.description = f"folder {self.root}"
        self.max_file_bytes = max_file_bytes
        self._paths: dict[str, Path] = {}
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(folder, name)
                if name in self._paths:
                    raise ArchiveError(
                        f"same file name as {self._paths[name]}; files are matched by base "
                        "name, so it would be ambiguous",
                        member=str(path),
                    )
                self._paths[name] = path

    def read(self, file_name: str) -> bytes | None:
        path = self._paths.get(file_name)
        if path is None:
            return None
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise ArchiveError("is a link that points outside the image folder", member=str(path))
        size = real.stat().st_size
        if size > self.max_file_bytes:
            raise ArchiveError(
                f"is {size} bytes, more than the limit of {self.max_file_bytes}", member=str(path)
            )
        return real.read_bytes()

    def close(self) -> None:
        return None


class ZipImages:
    """Image files inside a zip archive, checked as a whole before anything is read."""

    def __init__(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_total_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> None:
        try:
            self._archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ArchiveError(f"not a readable zip archive: {exc}") from exc
        self.description = f"zip archive {getattr(source, 'name', source)}"
        self.max_file_bytes = max_file_bytes
        try:
            self._members = safe_zip_members(
                self._archive, max_total_bytes=max_total_bytes, max_members=max_members
            )
        except ArchiveError:
            self._archive.close()
            raise

    def read(self, file_name: str) -> bytes | None:
        info = self._members.get(file_name)
        if info is None:
            return None
        return read_member(self._archive, info, max_bytes=self.max_file_bytes)

    def close(self) -> None:
        self._archive.close()


def open_image_source(path: str | os.PathLike[str]) -> ImageSource:
    """A folder or a .zip file, by what the path is."""
    p = Path(path)
    if p.is_dir():
        return FolderImages(p)
    if p.is_file():
        return ZipImages(p)
    raise ArchiveError(f"no image folder or zip archive at {str(path)!r}")
