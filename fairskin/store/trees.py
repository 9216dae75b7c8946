"""A folder published under a key prefix: its files, then a manifest naming each file's sha256.

The manifest is written last, so a reader that finds one finds every file it lists; files that
did not change since the previous manifest are not uploaded again, and objects the new
manifest no longer lists are deleted after it is written. Readers go through the host cache,
which checks each object's hash, so a tampered or half-overwritten object is never placed.

Trees do not nest: publishing `runs/1` deletes whatever else is under `runs/1/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairskin.store.cache import HashMismatch, HostCache, file_digest
from fairskin.store.errors import ArtifactCorrupt, ArtifactMissing, StoreError
from fairskin.store.keys import TMP_PREFIX, temp_path_beside, validate_key
from fairskin.store.objects import ObjectStore

MANIFEST_NAME = "MANIFEST.json"
FETCH_STATE_NAME = ".fetched.json"  # in a fetched folder: what was placed, to skip re-hashing
MANIFEST_FORMAT = 1
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass
class Manifest:
    key: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    complete: bool = True
    written_at: str = ""

    def to_json(self) -> str:
        files = {rel: {"sha256": e.sha256, "size": e.size} for rel, e in sorted(self.files.items())}
        body = {
            "format": MANIFEST_FORMAT,
            "key": self.key,
            "complete": self.complete,
            "written_at": self.written_at,
            "files": files,
        }
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, data: str | bytes, key: str | None = None) -> Manifest:
        """Parse a manifest; StoreError naming `key` (or the one inside) if it is malformed."""
        where = f"the manifest of {key!r}" if key else "a manifest"
        try:
            body = json.loads(data)
            files = {validate_key(rel): _entry(value) for rel, value in dict(body["files"]).items()}
            manifest = cls(
                key=str(body["key"]),
                files=files,
                complete=_boolean(body["complete"]),
                written_at=str(body["written_at"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise StoreError(
                f"{where} is malformed ({error}); publish the tree again to rewrite it"
            ) from error
        if key is not None and manifest.key != key:
            raise StoreError(f"{where} names another key, {manifest.key!r}; publish it again")
        return manifest


def _entry(value: Any) -> FileEntry:
    sha256, size = value["sha256"], value["size"]
    if not (isinstance(sha256, str) and len(sha256) == 64 and _is_hex(sha256)):
        raise ValueError(f"sha256 {sha256!r} is not 64 hex digits")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise ValueError(f"size {size!r} is not a non-negative integer")
    return FileEntry(sha256=sha256, size=size)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"'complete' is {value!r}, not true or false")
    return value


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def manifest_key(key: str) -> str:
    return f"{validate_key(key)}/{MANIFEST_NAME}"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _same_local_folder(store: ObjectStore, folder: Path, key: str) -> bool:
    root = store.local_root
    return root is not None and Path(folder).resolve() == (root / key).resolve()


def _walk(folder: Path, exclude: Callable[[str], bool] | None) -> Iterator[str]:
    """Relative posix paths of the files to publish, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(TMP_PREFIX))
        base = Path(dirpath).relative_to(folder)
        for name in filenames:
            if name.startswith(TMP_PREFIX) or name == FETCH_STATE_NAME:
                continue
            rel = validate_key((base / name).as_posix())
            if rel == MANIFEST_NAME or (exclude is not None and exclude(rel)):
                continue
            found.append(rel)
    return iter(sorted(found))


def _snapshot(source: Path, snapshot: Path) -> FileEntry:
    """Copy `source` to `snapshot` while hashing, so the upload matches the recorded hash even
    if the source is appended to meanwhile. FileNotFoundError if it vanished."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(snapshot, "wb") as out:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size=size)


def read_manifest(store: ObjectStore, key: str) -> Manifest:
    """The tree's manifest; ArtifactMissing if the tree was never published (or deleted)."""
    try:
        data = store.get_bytes(manifest_key(key))
    except ArtifactMissing as error:
        raise ArtifactMissing(
            f"{key} was never published to {store.describe()}, or was deleted "
            f"(no {MANIFEST_NAME} under it)"
        ) from error
    return Manifest.from_json(data, key)


def _previous_files(store: ObjectStore, key: str) -> dict[str, FileEntry]:
    try:
        return read_manifest(store, key).files
    except ArtifactMissing:
        return {}
    except StoreError as error:
        if type(error) is not StoreError:
            raise  # the store is unavailable: not a reason to upload everything again
        return {}  # a malformed manifest: upload everything and write a good one


def publish_tree(
    store: ObjectStore,
    folder: Path,
    key: str,
    *,
    complete: bool = True,
    exclude: Callable[[str], bool] | None = None,
) -> Manifest:
    """Publish `folder` under `key`: changed files, then the manifest, then stale deletions.

    With a local store whose `key` folder is `folder` itself, nothing is copied: the files are
    hashed and the manifest written beside them.
    """
    validate_key(key)
    folder = Path(folder)
    if not folder.is_dir():  # publishing nothing would delete the published tree
        raise NotADirectoryError(f"{folder} is not a folder; nothing to publish under {key}")
    manifest = Manifest(key=key, complete=complete)
    if _same_local_folder(store, folder, key):
        for rel in _walk(folder, exclude):
            try:
                digest, size = file_digest(folder / rel)
            except FileNotFoundError:
                continue  # deleted meanwhile (an old checkpoint pruned)
            manifest.files[rel] = FileEntry(sha256=digest, size=size)
        manifest.written_at = _utc_now()
        store.put_bytes(manifest_key(key), manifest.to_json().encode())
        return manifest

    previous = _previous_files(store, key)
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}-publish-", dir=folder) as tmp:
        snapshot = Path(tmp) / "snapshot"
        for rel in _walk(folder, exclude):
            try:
                entry = _snapshot(folder / rel, snapshot)
            except FileNotFoundError:
                continue
            manifest.files[rel] = entry
            if previous.get(rel) != entry:
                store.put_file(f"{key}/{rel}", snapshot)
    manifest.written_at = _utc_now()
    store.put_bytes(manifest_key(key), manifest.to_json().encode())
    listed = {f"{key}/{rel}" for rel in manifest.files} | {manifest_key(key)}
    stale = [k for k in store.list_keys(f"{key}/") if k not in listed]
    if stale:
        store.delete(stale)
    return manifest


def _load_state(dest: Path) -> dict[str, list[int | str]]:
    try:
        state = json.loads((dest / FETCH_STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(dest: Path, state: dict[str, list[int | str]]) -> None:
    target = dest / FETCH_STATE_NAME
    tmp = temp_path_beside(target)
    try:
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _in_place(target: Path, entry: FileEntry, recorded: list[int | str] | None) -> int | None:
    """The target's mtime_ns if it already holds `entry`'s bytes, else None."""
    try:
        stat = target.stat()
    except FileNotFoundError:
        return None
    if stat.st_size != entry.size:
        return None
    if recorded == [entry.sha256, entry.size, stat.st_mtime_ns]:
        return stat.st_mtime_ns
    digest, _ = file_digest(target)  # present but not placed by us (or touched since): hash
    return stat.st_mtime_ns if digest == entry.sha256 else None


def _place(cached: Path, target: Path, *, link: bool) -> None:
    """Put the cache's file at `target` atomically: a copy, or a hard link when asked."""
    tmp = temp_path_beside(target)
    try:
        if link:
            tmp.unlink()
            try:
                os.link(cached, tmp)
            except OSError:  # another filesystem (EXDEV) or no links there: copy
                shutil.copyfile(cached, tmp)
        else:
            shutil.copyfile(cached, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_tree(
    store: ObjectStore,
    key: str,
    dest: Path,
    cache: HostCache,
    *,
    include: Callable[[str], bool] | None = None,
    require_complete: bool = True,
    link: bool = False,
) -> Manifest:
    """Make `dest` hold the published tree's (included) files, through the host cache.

    Files already in `dest` with the manifest's bytes are left alone. A hash mismatch reads
    the manifest again and fetches once more (the tree may have been republished meanwhile);
    a second mismatch raises ArtifactCorrupt and places nothing for that file.
    """
    manifest = _readable_manifest(store, key, require_complete)
    dest = Path(dest)
    wanted = [rel for rel in sorted(manifest.files) if include is None or include(rel)]
    if _same_local_folder(store, dest, key):
        for rel in wanted:
            if not (dest / rel).is_file():
                raise ArtifactMissing(
                    f"{store.uri(f'{key}/{rel}')} is listed in the manifest of {key} "
                    "but is not in the store"
                )
        return manifest
    state = _load_state(dest)
    # Everything is downloaded (and verified) into the cache first, so a missing or corrupt
    # object leaves `dest` as it was.
    to_place: list[tuple[str, FileEntry, Path]] = []
    for rel in wanted:
        entry = manifest.files[rel]
        mtime = _in_place(dest / rel, entry, state.get(rel))
        if mtime is not None:
            state[rel] = [entry.sha256, entry.size, mtime]
            continue
        cached, entry, manifest = _cached_copy(store, key, rel, cache, manifest)
        to_place.append((rel, entry, cached))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for rel, entry, cached in to_place:
            target = dest / rel
            state.pop(rel, None)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                _place(cached, target, link=link)
            except FileNotFoundError:  # evicted since (a small cache, or another worker)
                cached, entry, manifest = _cached_copy(store, key, rel, cache, manifest)
                _place(cached, target, link=link)
            state[rel] = [entry.sha256, entry.size, target.stat().st_mtime_ns]
    finally:
        _save_state(dest, state)
    return manifest


def _readable_manifest(store: ObjectStore, key: str, require_complete: bool) -> Manifest:
    manifest = read_manifest(store, key)
    if require_complete and not manifest.complete:
        raise StoreError(
            f"{key} in {store.describe()} is still being written (its manifest says "
            "incomplete); wait until it is published complete"
        )
    return manifest


def _cached_copy(
    store: ObjectStore, key: str, rel: str, cache: HostCache, manifest: Manifest
) -> tuple[Path, FileEntry, Manifest]:
    """The cache's verified copy of `key/rel`, its entry, and the manifest in force (re-read
    once when a download does not match: the tree may have been republished meanwhile)."""
    object_key = f"{key}/{rel}"

    def download(tmp: Path) -> None:
        store.get_file(object_key, tmp)

    entry = manifest.files[rel]
    try:
        return cache.get_or_fetch(entry.sha256, entry.size, download), entry, manifest
    except HashMismatch as first:
        manifest = read_manifest(store, key)
        if rel not in manifest.files:
            raise ArtifactMissing(
                f"{store.uri(object_key)} changed while it was fetched and the newer manifest "
                f"of {key} no longer lists it; fetch {key} again"
            ) from first
    entry = manifest.files[rel]
    try:
        return cache.get_or_fetch(entry.sha256, entry.size, download), entry, manifest
    except HashMismatch as error:
        raise ArtifactCorrupt(
            f"{store.uri(object_key)} does not match the manifest of {key} even after a second "
            f"fetch: expected sha256 {error.expected}, got {error.actual}; publish {key} again"
        ) from error
