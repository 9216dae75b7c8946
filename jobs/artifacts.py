"""Where a job's artifacts live: one store for every host, and this host's working copy.

Runs, batch references and release archives are recorded by their store key (``runs/<identity>``,
``batches/<identity>``, ``releases/<identity>.zip``), never by a host path. With no bucket
configured the store is ``FAIRSKIN_ARTIFACTS_ROOT`` itself: a key's working folder *is* the
stored folder, and publishing only writes its manifest. With ``AWS_STORAGE_BUCKET_NAME`` set the
store is that bucket and ``FAIRSKIN_ARTIFACTS_ROOT`` is this host's working folder and cache:
a job fetches what it reads (through the per-host, hash-keyed cache), writes into its working
folder, and publishes it (files first, manifest last), so any host can carry on from there.

Rows written before the store held an absolute host path; ``manage.py upload_artifacts``
uploads those folders and rewrites the rows to keys (`reference_key`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from fairskin.store.cache import HostCache
from fairskin.store.errors import ArtifactMissing, StoreError
from fairskin.store.objects import ObjectStore, open_store
from fairskin.store.trees import Manifest, fetch_tree, publish_tree, read_manifest

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoints/step-(\d{6})/")
CLASSIFIER_CHECKPOINT = "checkpoint.pt"


class LegacyLocation(StoreError):
    """A row still names a host folder outside the artifacts root; it was never uploaded."""


def _config() -> tuple[str, str, str, str, str, str]:
    return (
        settings.AWS_STORAGE_BUCKET_NAME,
        str(settings.FAIRSKIN_ARTIFACTS_ROOT),
        settings.AWS_S3_ENDPOINT_URL,
        settings.AWS_ACCESS_KEY_ID,
        settings.AWS_SECRET_ACCESS_KEY,
        settings.AWS_S3_REGION_NAME,
    )


@lru_cache(maxsize=4)
def _open(config: tuple[str, str, str, str, str, str]) -> ObjectStore:
    bucket, root, endpoint, key_id, secret, region = config
    return open_store(
        bucket=bucket,
        local_root=Path(root),
        endpoint_url=endpoint or None,
        access_key=key_id or None,
        secret_key=secret or None,
        region=region or None,
    )


def store() -> ObjectStore:
    """The artifact store the settings name (one client per configuration and process)."""
    return _open(_config())


def is_remote() -> bool:
    return bool(settings.AWS_STORAGE_BUCKET_NAME)


def host_cache() -> HostCache:
    root = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "cache"
    return HostCache(root, settings.FAIRSKIN_ARTIFACTS_CACHE_BYTES)


# --- references: a row's key, its working folder ------------------------------------------


def reference_key(ref: str) -> str:
    """The store key a row's reference names. New rows hold the key; rows from before the
    store hold an absolute path, which is the key's folder when it lies under the root."""
    if not ref.strip():
        raise ArtifactMissing("no artifacts are recorded for it")
    path = PurePosixPath(ref)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return Path(ref).relative_to(Path(settings.FAIRSKIN_ARTIFACTS_ROOT)).as_posix()
    except ValueError:
        raise LegacyLocation(
            f"its artifacts were recorded at the host folder {ref}, outside "
            "FAIRSKIN_ARTIFACTS_ROOT and never uploaded: run `manage.py upload_artifacts` on "
            "the host that holds that folder to move them into the store"
        ) from None


def local_folder(ref: str) -> Path:
    """This host's working folder for a reference (where a job writes and reads it)."""
    path = Path(ref)
    if path.is_absolute() and not is_remote():
        return path  # a local installation's row from before the store: where it always was
    return Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / reference_key(ref)


def uri(ref: str) -> str:
    """Where a reference's artifacts are, for people: the bucket URI, or the local folder."""
    if not is_remote():
        return str(local_folder(ref))
    return store().uri(reference_key(ref))


@contextlib.contextmanager
def _key_lock(key: str) -> Iterator[None]:
    """Serialise fetches of one key among this host's processes (workers, web processes)."""
    locks = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "cache" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    with (locks / f"tree-{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- reading ---------------------------------------------------------------------------------


def fetch(
    ref: str,
    *,
    include: Callable[[str], bool] | None = None,
    complete: bool = True,
    link: bool = False,
    copy_root: Path | None = None,
) -> Path:
    """The reference's folder on this host, with the files ``include`` selects fetched from
    the store (through the host cache) and checked against the manifest's hashes. ``complete``:
    refuse a folder still being written. ``copy_root``: fetch into a folder under it instead
    of the working folder (pages read copies, never a folder a job on this host writes).
    Locally, the folder itself."""
    if not is_remote():
        folder = local_folder(ref)
        if complete and not folder.is_dir():
            raise ArtifactMissing(f"the artifacts folder {folder} is missing")
        return folder
    key = reference_key(ref)
    folder = (copy_root / key) if copy_root is not None else local_folder(ref)
    with _key_lock(str(folder)):
        fetch_tree(
            store(),
            key,
            folder,
            host_cache(),
            include=include,
            require_complete=complete,
            link=link,
        )
    return folder


def read_folder(ref: str, include: Callable[[str], bool]) -> Path | None:
    """For pages: a copy of the small files ``include`` selects, from a run that may still be
    writing them; None when nothing is published yet. The copy is kept apart from the working
    folders, so a page never overwrites what a job on the same host is writing."""
    if not ref.strip():
        return None
    try:
        pages = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "pages"
        return fetch(ref, include=include, complete=False, copy_root=pages)
    except ArtifactMissing:
        return None


def published(ref: str) -> bool:
    """Whether the reference's artifacts are complete in the store (`LegacyLocation` for a
    host path that was never uploaded: the message says what to do)."""
    if not ref.strip():
        return False
    if not is_remote():
        return local_folder(ref).is_dir()
    try:
        return read_manifest(store(), reference_key(ref)).complete
    except ArtifactMissing:
        return False


def has_file(ref: str, rel: str) -> bool:
    """Whether a published folder holds ``rel`` (told from its manifest; nothing fetched)."""
    if not ref.strip():
        return False
    if not is_remote():
        return (local_folder(ref) / rel).is_file()
    return rel in (manifest_files(ref) or [])


def manifest_files(ref: str) -> list[str] | None:
    """The files a reference's manifest lists (None: nothing published), for pages that
    list artifacts without fetching them."""
    try:
        return sorted(read_manifest(store(), reference_key(ref)).files)
    except ArtifactMissing:
        return None


def open_object(key_or_path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream one stored object (a release archive, an artifact file) in chunks; a legacy
    absolute path on a local installation is read from disk."""
    if not is_remote() and Path(key_or_path).is_absolute():
        path = Path(key_or_path)
        if not path.is_file():
            raise ArtifactMissing(f"{path} is missing")
        return _file_chunks(path, chunk_size)
    return _primed(store().open_chunks(reference_key(key_or_path), chunk_size))


def open_member(ref: str, rel: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream one file of a published folder (a run's artifact) in chunks."""
    if not is_remote():
        path = local_folder(ref) / rel
        if not path.is_file():
            raise ArtifactMissing(f"{path} is missing")
        return _file_chunks(path, chunk_size)
    return _primed(store().open_chunks(f"{reference_key(ref)}/{rel}", chunk_size))


def _primed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks, with the first already read: a missing object fails here, before a
    response has started, not halfway through it."""
    first = next(chunks, b"")

    def all_chunks() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    return all_chunks()


def _file_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


# --- writing ---------------------------------------------------------------------------------


def working_files(rel: str) -> bool:
    """Files a run's folder holds only while it works: a checkpoint being written, the ranks'
    pid, heartbeat and event files, temporary files. Never published."""
    parts = rel.split("/")
    return (
        rel.startswith("parallel/")
        or rel.startswith("cache/")
        or any(p.startswith(".") or p.endswith(".partial") for p in parts)
    )


def publish(
    ref: str, *, complete: bool = True, exclude: Callable[[str], bool] | None = None
) -> Manifest | None:
    """Publish the reference's working folder under its key: changed files first, the
    manifest last (``complete`` says whether the folder is finished). Locally the files are
    already in place and only the manifest is written."""
    if not is_remote() and Path(ref).is_absolute():
        try:
            reference_key(ref)
        except LegacyLocation:
            return None  # a folder from before the store, where it always was
    skip = working_files if exclude is None else (lambda rel: working_files(rel) or exclude(rel))
    return publish_tree(
        store(), local_folder(ref), reference_key(ref), complete=complete, exclude=skip
    )


def put_file(key: str, path: Path) -> str:
    """Store one finished file (a release archive) under ``key``; returns the key."""
    store().put_file(key, path)
    return key


def fetch_file(key: str) -> Path:
    """One stored file (an uploaded import) on this host, at its key's working path."""
    path = local_folder(key)
    if is_remote():
        store().get_file(reference_key(key), path)
    elif not path.is_file():
        raise ArtifactMissing(f"{path} is missing")
    return path


def remove(key: str) -> None:
    """Remove one stored file and this host's copy (an import, once converted)."""
    local_folder(key).unlink(missing_ok=True)
    if is_remote():
        store().delete([reference_key(key)])


def latest_checkpoint_step(files: list[str] | dict[str, Any]) -> int | None:
    steps = [int(m.group(1)) for rel in files if (m := CHECKPOINT.match(rel))]
    return max(steps) if steps else None


def fetch_for_resume(ref: str) -> int | None:
    """Before a run (re)starts on this host: when the store holds a later checkpoint than this
    host's folder (the run was killed on another host), fetch the run's published state, so it
    resumes from the last uploaded checkpoint. Returns the store's latest checkpoint step."""
    if not is_remote():
        return None
    key = reference_key(ref)
    try:
        manifest = read_manifest(store(), key)
    except ArtifactMissing:
        return None  # never published: a fresh start
    remote = latest_checkpoint_step(manifest.files)
    folder = local_folder(ref)
    here = [
        p.relative_to(folder).as_posix() + "/"
        for p in (folder / "checkpoints").glob("step-??????")
        if p.is_dir()
    ]
    local = latest_checkpoint_step(here)
    if remote is not None and (local is None or remote > local):
        fetch(ref, complete=False)
    elif CLASSIFIER_CHECKPOINT in manifest.files and not (folder / CLASSIFIER_CHECKPOINT).exists():
        fetch(ref, complete=False)  # a classifier's one checkpoint (per epoch)
        return 0
    return remote


class ArtifactSync:
    """While a job writes into a working folder, publish it (incomplete) whenever it changed,
    at most every ``every`` seconds: checkpoints reach the store as they are written, and
    pages on other hosts see the run's logs. A failing upload is logged and retried at the
    next round; it never stops the work. Local installations need none of it."""

    def __init__(self, ref: str, every: float) -> None:
        self.ref = ref
        self.every = every
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_seen: tuple[Any, ...] | None = None
        self.published = 0
        self.error: str | None = None

    def _snapshot(self) -> tuple[Any, ...]:
        folder = local_folder(self.ref)
        found = []
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if working_files(rel):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file():
                found.append((rel, stat.st_size, stat.st_mtime_ns))
        return tuple(sorted(found))

    def sync_once(self) -> None:
        seen = self._snapshot()
        if seen == self.last_seen or not seen:
            return
        try:
            publish(self.ref, complete=False)
        except StoreError as error:  # an outage: the next round tries again
            self.error = str(error)
            log.warning("publishing %s failed: %s", self.ref, error)
            return
        self.last_seen = seen
        self.published += 1
        self.error = None

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self.sync_once()

    def __enter__(self) -> ArtifactSync:
        if is_remote():
            self.thread = threading.Thread(target=self._loop, daemon=True, name="artifact-sync")
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        self.sync_once()  # what the last moments wrote (a cancel's checkpoint)


# --- base models built from config --------------------------------------------------------


def base_model(spec: str) -> Any:
    """The run's base model on this host (`resolve_base_model`, building `tiny` and
    `sd15-random` on first use). With a bucket, a built model's fingerprint must be the one
    the store records (the first host to build it records it): a host whose library versions
    draw other random weights is refused before it trains or generates anything."""
    from fairskin.diffusion.base_models import SD15_RANDOM, TINY, resolve_base_model

    base = resolve_base_model(spec, cache_dir=settings.FAIRSKIN_MODEL_CACHE)
    if is_remote() and base.source in (TINY, SD15_RANDOM):
        check_built_model(base.source, Path(base.path))
    return base


def check_built_model(name: str, folder: Path) -> None:
    from fairskin.diffusion.base_models import fingerprint

    sha = fingerprint(folder)
    key = f"base-models/{name}.json"
    try:
        known = json.loads(store().get_bytes(key))
    except ArtifactMissing:
        record = {"sha256": sha, "host": socket.gethostname(), "folder": str(folder)}
        store().put_bytes(key, json.dumps(record).encode())
        return
    if known.get("sha256") != sha:
        raise StoreError(
            f"the {name!r} base model built on this host (sha256 {sha[:12]}) is not the one "
            f"the other hosts use (sha256 {str(known.get('sha256'))[:12]}, first built on "
            f"{known.get('host')}): its runs would not load the same weights here. Install the "
            f"same torch, diffusers and transformers versions as that host (requirements), "
            f"remove {folder} and try again"
        )


# --- moving a local installation into the store --------------------------------------------


def upload_reference(ref: str, prefix: str, *, dry_run: bool = False) -> tuple[str, str, bool]:
    """Upload one row's artifacts (a folder, or a release archive) into the store under
    ``prefix/<its name>``. Returns the key to record, what was done, and whether the
    artifacts are in the store. Idempotent: a key is published again with only its changed
    files uploaded. Changes nothing when the files are missing (the message says so)."""
    path = Path(ref)
    if path.is_absolute():
        source, key = path, f"{prefix}/{path.name}"
    else:
        source, key = local_folder(ref), reference_key(ref)
    where = store().uri(key)
    if source.is_file():
        if not dry_run:
            store().put_file(key, source)
        return key, f"{'would upload' if dry_run else 'uploaded'} {source} to {where}", True
    if not source.is_dir():
        if not path.is_absolute() and (store().exists(key) or published(ref)):
            return key, f"already in the store at {where}", True
        return ref, f"left as it is: {source} is missing on this host", False
    if dry_run:
        return key, f"would publish {source} as {where}", True
    manifest = publish_tree(store(), source, key, complete=True, exclude=working_files)
    return key, f"published {source} as {where} ({len(manifest.files)} files)", True
