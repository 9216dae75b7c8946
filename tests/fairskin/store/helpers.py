"""Shared pieces of the store tests: both stores by name, a store that records (and can fail)
its calls, and the function a separate process runs to fetch through a shared cache."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from fairskin.store.cache import HostCache
from fairskin.store.errors import StoreError
from fairskin.store.objects import LocalObjectStore, ObjectStore, S3ObjectStore


def make_store(kind: str, tmp_path: Path, s3_server: object | None, bucket: str) -> ObjectStore:
    if kind == "local":
        return LocalObjectStore(tmp_path / "store")
    assert s3_server is not None
    return S3ObjectStore(
        bucket,
        endpoint_url=s3_server.endpoint_url,  # type: ignore[attr-defined]
        access_key=s3_server.access_key,  # type: ignore[attr-defined]
        secret_key=s3_server.secret_key,  # type: ignore[attr-defined]
        region=s3_server.region,  # type: ignore[attr-defined]
    )


class RecordingStore:
    """Another store, with every write and read recorded as (method, key) in order; writes
    fail with StoreError once `fail_after_puts` of them have succeeded."""

    def __init__(self, inner: ObjectStore, *, fail_after_puts: int | None = None) -> None:
        self.inner = inner
        self.local_root = inner.local_root
        self.calls: list[tuple[str, str]] = []
        self.fail_after_puts = fail_after_puts

    def _put(self, method: str, key: str) -> None:
        puts = sum(1 for name, _ in self.calls if name.startswith("put"))
        if self.fail_after_puts is not None and puts >= self.fail_after_puts:
            raise StoreError(f"injected failure writing {key}")
        self.calls.append((method, key))

    def puts(self) -> list[str]:
        return [key for name, key in self.calls if name.startswith("put")]

    def gets(self, key: str) -> int:
        return sum(1 for name, k in self.calls if name == "get_file" and k == key)

    def describe(self) -> str:
        return self.inner.describe()

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def check(self) -> None:
        self.inner.check()

    def put_file(self, key: str, path: Path) -> None:
        self._put("put_file", key)
        self.inner.put_file(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put("put_bytes", key)
        self.inner.put_bytes(key, data)

    def get_file(self, key: str, dest: Path) -> None:
        self.calls.append(("get_file", key))
        self.inner.get_file(key, dest)

    def get_bytes(self, key: str) -> bytes:
        self.calls.append(("get_bytes", key))
        return self.inner.get_bytes(key)

    def open_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self.inner.open_chunks(key, chunk_size)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.calls.extend(("delete", key) for key in keys)
        self.inner.delete(keys)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_in_process(cache_root: str, data: bytes, log: str, start_at: float) -> str:
    """In a separate process: wait until `start_at`, then get `data` through the cache; the
    download (slowed, so the other process asks while it runs) appends a line to `log`."""

    def download(tmp: Path) -> None:
        with open(log, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        tmp.write_bytes(data)

    time.sleep(max(0.0, start_at - time.time()))
    cache = HostCache(Path(cache_root), max_bytes=0)
    return str(cache.get_or_fetch(sha(data), len(data), download))
