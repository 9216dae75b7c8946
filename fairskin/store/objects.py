"""Objects under keys: one interface, a local folder or an S3-compatible bucket behind it.

`open_store` picks the bucket when one is named, else the local folder, so the embedded default
(`make run`, one host) needs no setting and several hosts share artifacts through a bucket.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from fairskin.store.errors import ArtifactMissing, StoreUnavailable
from fairskin.store.keys import TMP_PREFIX, temp_path_beside, validate_key, validate_prefix
from fairskin.store.s3 import S3ObjectStore

__all__ = ["LocalObjectStore", "ObjectStore", "S3ObjectStore", "open_store"]


class ObjectStore(Protocol):
    """Bytes under keys. Keys are validated (`fairskin.store.keys.validate_key`) by every
    method that takes one; a bad key raises ValueError and touches nothing."""

    local_root: Path | None  # the folder of a LocalObjectStore; None for a bucket

    def describe(self) -> str:
        """Where the objects are, for messages: "s3://bucket (endpoint)", "local folder /x"."""
        ...

    def uri(self, key: str) -> str:
        """The object's address: "s3://bucket/key", or the absolute local path."""
        ...

    def check(self) -> None:
        """Raise StoreUnavailable, saying what is wrong and what to do, unless usable."""
        ...

    def put_file(self, key: str, path: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None:
        """Write the object to `dest` atomically; ArtifactMissing if there is none."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def open_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object; ArtifactMissing is raised by this call, before any chunk."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix` (a plain string prefix, as S3 has it), sorted."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Remove the objects; keys that are already gone are not an error."""
        ...


class LocalObjectStore:
    """Objects as files: key `k` is `root / k`. Writes go to a temporary file beside the
    target and are renamed into place, so a reader sees the old object or the new one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.local_root: Path | None = self.root

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def describe(self) -> str:
        return f"local folder {self.root}"

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(
                f"the artifact folder {self.root} cannot be created ({error.strerror}); "
                "set FAIRSKIN_ARTIFACTS_ROOT to a writable folder"
            ) from error
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnavailable(
                f"the artifact folder {self.root} is not writable by this process; "
                "fix its permissions or set FAIRSKIN_ARTIFACTS_ROOT elsewhere"
            )

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        if target.exists() and os.path.samefile(target, path):
            return  # already in place: the store's folder is the working folder
        tmp = temp_path_beside(target)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = temp_path_beside(target)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _existing(self, key: str) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise ArtifactMissing(f"object {key!r} is not in the {self.describe()}")
        return source

    def get_file(self, key: str, dest: Path) -> None:
        source = self._existing(key)
        tmp = temp_path_beside(dest)
        try:
            try:
                shutil.copyfile(source, tmp)
            except FileNotFoundError as error:  # deleted between the check and the copy
                raise ArtifactMissing(f"object {key!r} is not in the {self.describe()}") from error
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._existing(key).read_bytes()
        except FileNotFoundError as error:
            raise ArtifactMissing(f"object {key!r} is not in the {self.describe()}") from error

    def open_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = open(self._existing(key), "rb")  # closed by _read_chunks
        except FileNotFoundError as error:
            raise ArtifactMissing(f"object {key!r} is not in the {self.describe()}") from error
        return _read_chunks(handle, chunk_size)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        # Walk the deepest folder the prefix names, then filter by the string prefix.
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue  # another writer's file on its way into place
                key = name if base == "." else f"{base}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            target = self.path(key)
            target.unlink(missing_ok=True)
            self._remove_empty_parents(target.parent)

    def _remove_empty_parents(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or already gone): stop climbing
            folder = folder.parent


def _read_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def open_store(
    *,
    bucket: str,
    local_root: Path,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> ObjectStore:
    """The bucket when `bucket` is non-empty (AWS_STORAGE_BUCKET_NAME), else `local_root`."""
    if bucket:
        return S3ObjectStore(
            bucket,
            endpoint_url=endpoint_url or None,
            access_key=access_key or None,
            secret_key=secret_key or None,
            region=region or None,
        )
    return LocalObjectStore(local_root)
