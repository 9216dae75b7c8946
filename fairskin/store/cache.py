"""A per-host, content-addressed cache of downloaded objects, bounded in size (LRU).

Objects live at `root/objects/<sha[:2]>/<sha>`; their mtime is their last use. A miss is
downloaded under a per-hash file lock, so several worker processes on one host asking for the
same object download it once (the others find it when they get the lock). Every download is
checked against the expected sha256 and size before it becomes visible; a mismatch is deleted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fairskin.store.errors import ArtifactCorrupt
from fairskin.store.keys import TMP_PREFIX, temp_path_beside

HASH_CHUNK = 1 << 20


class HashMismatch(ArtifactCorrupt):
    """A download's bytes are not the ones expected; it was deleted, not cached."""

    def __init__(
        self, message: str, *, expected: str, actual: str, expected_size: int, actual_size: int
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file's bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


class HostCache:
    """Objects by sha256 under `root`, at most `max_bytes` in total (<= 0: unbounded)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.bytes_downloaded = 0
        self._counter_lock = threading.Lock()
        self._last_added: Path | None = None

    def __repr__(self) -> str:
        return f"HostCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def path_for(self, sha256: str) -> Path:
        return self.root / "objects" / _check_sha(sha256)[:2] / sha256

    def _hit(self, path: Path) -> bool:
        try:
            os.utime(path)  # the mtime is the last use, for LRU eviction
        except FileNotFoundError:
            return False  # evicted just now
        with self._counter_lock:
            self.hits += 1
        return True

    def get_or_fetch(self, sha256: str, size: int, fetch: Callable[[Path], None]) -> Path:
        """The cached file with these bytes, calling `fetch(tmp)` to download it on a miss.

        `fetch` writes the object to the path it is given. HashMismatch if what it wrote is
        not `sha256`/`size` (the download is deleted).
        """
        path = self.path_for(sha256)
        if self._hit(path):
            return path
        with _flock(self.root / "locks" / f"{sha256}.lock"):
            if self._hit(path):
                return path  # another process downloaded it while we waited
            tmp = temp_path_beside(path)
            try:
                fetch(tmp)
                actual, actual_size = file_digest(tmp)
                if actual != sha256 or actual_size != size:
                    raise HashMismatch(
                        f"downloaded object has sha256 {actual} ({actual_size} bytes), "
                        f"expected {sha256} ({size} bytes); it was not cached",
                        expected=sha256,
                        actual=actual,
                        expected_size=size,
                        actual_size=actual_size,
                    )
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            with self._counter_lock:
                self.misses += 1
                self.bytes_downloaded += actual_size
                self._last_added = path
        self.evict()
        return path

    def _objects(self) -> list[tuple[int, int, Path]]:
        """(mtime_ns, size, path) of every cached object; ones vanishing meanwhile skipped."""
        found = []
        objects = self.root / "objects"
        if not objects.is_dir():
            return []
        for shard in os.scandir(objects):
            if not shard.is_dir():
                continue
            for item in os.scandir(shard.path):
                if item.name.startswith(TMP_PREFIX):
                    continue
                try:
                    stat = item.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime_ns, stat.st_size, Path(item.path)))
        return found

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._objects())

    def evict(self) -> None:
        """Remove least-recently-used objects until the cache fits in `max_bytes`; never the
        object this cache added last (the caller is about to use it)."""
        if self.max_bytes <= 0:
            return
        with _flock(self.root / "cache.lock"):
            objects = sorted(self._objects())
            total = sum(size for _, size, _ in objects)
            for _, size, path in objects:
                if total <= self.max_bytes:
                    break
                if path == self._last_added:
                    continue
                path.unlink(missing_ok=True)
                total -= size
