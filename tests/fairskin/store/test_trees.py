"""Trees: a folder published under a key with its manifest last, fetched through the cache."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from fairskin.store.cache import HostCache
from fairskin.store.errors import ArtifactCorrupt, ArtifactMissing, StoreError
from fairskin.store.objects import LocalObjectStore
from fairskin.store.trees import (
    FETCH_STATE_NAME,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    fetch_tree,
    publish_tree,
    read_manifest,
)
from tests.fairskin.store.helpers import RecordingStore, sha


def make_run(folder: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"rank": 16}',
        "lora/weights.safetensors": os.urandom(300_000),
        "checkpoints/step-10/state.pt": os.urandom(50_000),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def make_source(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    source = tmp_path / "src"
    source.mkdir()
    return source, make_run(source)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != FETCH_STATE_NAME
    }


def test_publish_then_fetch_gives_identical_bytes(store, cache, tmp_path):
    source = tmp_path / "host-a" / "run"
    source.mkdir(parents=True)
    files = make_run(source)
    (source / ".tmp-partial").write_bytes(b"being written")
    manifest = publish_tree(store, source, "runs/7")

    assert manifest.complete
    assert manifest.files["lora/weights.safetensors"] == FileEntry(
        sha(files["lora/weights.safetensors"]), 300_000
    )
    assert set(manifest.files) == set(files), "temporary files are not published"
    assert read_manifest(store, "runs/7") == manifest
    dest = tmp_path / "host-b" / "run"
    fetched = fetch_tree(store, "runs/7", dest, cache)
    assert fetched == manifest
    assert folder_bytes(dest) == files
    assert cache.misses == len(files)


def test_fetch_places_copies_not_links_unless_asked(store, cache, tmp_path):
    source, _ = make_source(tmp_path)
    publish_tree(store, source, "runs/1")
    copied = tmp_path / "copied"
    fetch_tree(store, "runs/1", copied, cache)
    cached = cache.path_for(sha((source / "config.json").read_bytes()))
    assert (copied / "config.json").stat().st_ino != cached.stat().st_ino
    linked = tmp_path / "linked"
    fetch_tree(store, "runs/1", linked, cache, link=True)
    assert (linked / "config.json").stat().st_ino == cached.stat().st_ino
    assert cache.misses == 4 and cache.hits == 4, "the second fetch came from the cache"


def test_manifest_is_written_last(store, tmp_path):
    source, _ = make_source(tmp_path)
    recording = RecordingStore(store)
    publish_tree(recording, source, "runs/3")
    puts = recording.puts()
    assert puts[-1] == f"runs/3/{MANIFEST_NAME}"
    assert len(puts) == 5


def test_interrupted_publish_leaves_the_previous_tree_readable(store, cache, tmp_path):
    source, old = make_source(tmp_path)
    publish_tree(store, source, "runs/4")
    # The next publish changes two files and dies after uploading the first of them.
    (source / "config.json").write_bytes(b'{"rank": 32}')
    (source / "lora/weights.safetensors").write_bytes(b"new weights")
    failing = RecordingStore(store, fail_after_puts=1)
    with pytest.raises(StoreError, match="injected"):
        publish_tree(failing, source, "runs/4")
    assert failing.puts() == ["runs/4/config.json"]
    manifest = read_manifest(store, "runs/4")
    assert manifest.files["config.json"] == FileEntry(
        sha(old["config.json"]), len(old["config.json"])
    )

    # A tree whose first publish dies has no manifest at all: readers see nothing.
    fresh = RecordingStore(store, fail_after_puts=1)
    with pytest.raises(StoreError, match="injected"):
        publish_tree(fresh, source, "runs/5")
    with pytest.raises(ArtifactMissing, match="runs/5 was never published"):
        read_manifest(store, "runs/5")
    with pytest.raises(ArtifactMissing, match="runs/5 was never published"):
        fetch_tree(store, "runs/5", tmp_path / "dest", cache)
    assert not (tmp_path / "dest").exists()


def test_republish_uploads_only_changed_files_and_removes_deleted_ones(store, tmp_path):
    source, _ = make_source(tmp_path)
    publish_tree(store, source, "runs/2")
    (source / "config.json").write_bytes(b'{"rank": 8}')
    (source / "checkpoints/step-10/state.pt").unlink()
    (source / "checkpoints/step-20").mkdir()
    (source / "checkpoints/step-20/state.pt").write_bytes(b"newer")
    recording = RecordingStore(store)
    manifest = publish_tree(recording, source, "runs/2")

    assert recording.puts() == [
        "runs/2/checkpoints/step-20/state.pt",
        "runs/2/config.json",
        f"runs/2/{MANIFEST_NAME}",
    ]
    assert recording.calls[-1] == ("delete", "runs/2/checkpoints/step-10/state.pt")
    assert store.list_keys("runs/2/") == sorted(
        [f"runs/2/{rel}" for rel in manifest.files] + [f"runs/2/{MANIFEST_NAME}"]
    )


def test_exclude_keeps_files_out(store, tmp_path):
    source, _ = make_source(tmp_path)
    manifest = publish_tree(store, source, "runs/6", exclude=lambda rel: rel.endswith(".pt"))
    assert "checkpoints/step-10/state.pt" not in manifest.files
    assert not store.exists("runs/6/checkpoints/step-10/state.pt")


def test_fetch_refetches_a_modified_file_and_skips_intact_ones(store, tmp_path):
    source, files = make_source(tmp_path)
    publish_tree(store, source, "runs/8")
    recording = RecordingStore(store)
    cache = HostCache(tmp_path / "cache", max_bytes=0)
    dest = tmp_path / "dest"
    fetch_tree(recording, "runs/8", dest, cache)
    assert json.loads((dest / FETCH_STATE_NAME).read_text()).keys() == files.keys()

    (dest / "config.json").write_bytes(b'{"rank": 1}')  # same size would not do: differ
    (dest / "lora/weights.safetensors").unlink()
    cache_hits = cache.hits
    fetch_tree(recording, "runs/8", dest, cache)
    assert folder_bytes(dest) == files
    assert cache.hits == cache_hits + 2, "only the two damaged files were looked up again"
    assert recording.gets("runs/8/config.json") == 1, "served from the host cache"


def test_fetch_notices_a_same_size_edit(store, cache, tmp_path):
    source, files = make_source(tmp_path)
    publish_tree(store, source, "runs/8")
    dest = tmp_path / "dest"
    fetch_tree(store, "runs/8", dest, cache)
    target = dest / "config.json"
    target.write_bytes(b'{"rank": 99}')  # same length as the original
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 1_000_000))
    fetch_tree(store, "runs/8", dest, cache)
    assert target.read_bytes() == files["config.json"]


def test_incomplete_manifest_is_refused_unless_allowed(store, cache, tmp_path):
    source, files = make_source(tmp_path)
    publish_tree(store, source, "runs/10", complete=False)
    with pytest.raises(StoreError, match="runs/10 .* is still being written"):
        fetch_tree(store, "runs/10", tmp_path / "dest", cache)
    assert not (tmp_path / "dest").exists()
    fetch_tree(store, "runs/10", tmp_path / "dest", cache, require_complete=False)
    assert folder_bytes(tmp_path / "dest") == files


def test_object_deleted_under_a_tree_is_missing_and_dest_is_unchanged(store, cache, tmp_path):
    source, _ = make_source(tmp_path)
    publish_tree(store, source, "runs/11")
    store.delete(["runs/11/lora/weights.safetensors"])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("kept")
    with pytest.raises(ArtifactMissing, match="runs/11/lora/weights.safetensors"):
        fetch_tree(store, "runs/11", dest, cache)
    assert folder_bytes(dest) == {"mine.txt": b"kept"}


def test_tampered_object_is_refused_after_one_refetch(store, tmp_path):
    source, files = make_source(tmp_path)
    publish_tree(store, source, "runs/12")
    store.put_bytes("runs/12/lora/weights.safetensors", b"tampered" * 10)
    recording = RecordingStore(store)
    cache = HostCache(tmp_path / "cache", max_bytes=0)
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactCorrupt) as corrupt:
        fetch_tree(recording, "runs/12", dest, cache)
    message = str(corrupt.value)
    assert "runs/12/lora/weights.safetensors" in message
    assert sha(files["lora/weights.safetensors"]) in message
    assert sha(b"tampered" * 10) in message
    assert recording.gets("runs/12/lora/weights.safetensors") == 2
    assert recording.calls.count(("get_bytes", f"runs/12/{MANIFEST_NAME}")) == 2
    assert not (dest / "lora/weights.safetensors").exists()
    # The files before it were cached; the tampered bytes were not.
    others = ["checkpoints/step-10/state.pt", "config.json", "empty.txt"]
    assert cache.total_bytes() == sum(len(files[rel]) for rel in others)


def test_refetch_follows_a_republished_tree(store, tmp_path):
    """A mismatch because the tree was republished meanwhile resolves on the second read."""
    source, _ = make_source(tmp_path)
    publish_tree(store, source, "runs/13")
    stale = read_manifest(store, "runs/13")
    (source / "config.json").write_bytes(b"republished")
    publish_tree(store, source, "runs/13")

    class StaleFirstRead(RecordingStore):
        def get_bytes(self, key: str) -> bytes:
            first = not any(name == "get_bytes" for name, _ in self.calls)
            data = super().get_bytes(key)
            return stale.to_json().encode() if first else data

    dest = tmp_path / "dest"
    manifest = fetch_tree(StaleFirstRead(store), "runs/13", dest, HostCache(tmp_path / "c", 0))
    assert (dest / "config.json").read_bytes() == b"republished"
    assert manifest == read_manifest(store, "runs/13")


def test_malformed_manifest_is_refused_naming_the_key(store, cache, tmp_path):
    store.put_bytes(f"runs/14/{MANIFEST_NAME}", b"{not json")
    with pytest.raises(StoreError, match="manifest of 'runs/14' is malformed"):
        read_manifest(store, "runs/14")
    bad_path = Manifest("runs/14", {"../../etc/passwd": FileEntry("0" * 64, 1)}).to_json()
    store.put_bytes(f"runs/14/{MANIFEST_NAME}", bad_path.encode())
    with pytest.raises(StoreError, match="malformed.*'..'"):
        fetch_tree(store, "runs/14", tmp_path / "dest", cache)


def test_a_file_appended_to_during_publish_matches_its_hash(store, cache, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    log = source / "train.log"
    log.write_bytes(os.urandom(8 << 20))
    stop = threading.Event()

    def append() -> None:
        with open(log, "ab") as out:
            while not stop.is_set():
                out.write(os.urandom(4096))
                out.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        manifest = publish_tree(store, source, "runs/15")
    finally:
        stop.set()
        writer.join()
    final = log.read_bytes()
    assert len(final) > manifest.files["train.log"].size, "the file grew during the publish"
    dest = tmp_path / "dest"
    fetch_tree(store, "runs/15", dest, cache)  # the cache verifies the hash
    fetched = (dest / "train.log").read_bytes()
    assert len(fetched) == manifest.files["train.log"].size
    assert final.startswith(fetched)


def test_local_store_publishing_its_own_folder_copies_nothing(tmp_path, cache):
    store = LocalObjectStore(tmp_path / "artifacts")
    run = tmp_path / "artifacts" / "runs" / "16"
    run.mkdir(parents=True)
    files = make_run(run)
    inode = (run / "config.json").stat().st_ino
    recording = RecordingStore(store)
    manifest = publish_tree(recording, run, "runs/16")
    assert recording.puts() == [f"runs/16/{MANIFEST_NAME}"]
    assert set(manifest.files) == set(files)
    assert (run / "config.json").stat().st_ino == inode

    # Fetching into the same folder only checks the files are there.
    fetched = fetch_tree(recording, "runs/16", run, cache)
    assert fetched == manifest
    assert cache.misses == 0
    assert not (run / FETCH_STATE_NAME).exists()
    (run / "empty.txt").unlink()
    with pytest.raises(ArtifactMissing, match="empty.txt"):
        fetch_tree(store, "runs/16", run, cache)


def test_include_fetches_only_some_files(store, cache, tmp_path):
    source, _ = make_source(tmp_path)
    publish_tree(store, source, "runs/17")
    dest = tmp_path / "dest"
    fetch_tree(store, "runs/17", dest, cache, include=lambda rel: rel.startswith("lora/"))
    assert set(folder_bytes(dest)) == {"lora/weights.safetensors"}


def test_publishing_a_missing_folder_is_refused_and_keeps_the_tree(store, tmp_path):
    source, files = make_source(tmp_path)
    publish_tree(store, source, "runs/18")
    with pytest.raises(NotADirectoryError, match="nothing to publish under runs/18"):
        publish_tree(store, tmp_path / "gone", "runs/18")
    assert set(read_manifest(store, "runs/18").files) == set(files)
    assert len(store.list_keys("runs/18/")) == len(files) + 1


def test_a_file_name_that_is_no_key_is_refused_before_anything_is_written(store, tmp_path):
    source, _ = make_source(tmp_path)
    (source / "bad\\name").write_bytes(b"x")
    recording = RecordingStore(store)
    with pytest.raises(ValueError, match="backslash"):
        publish_tree(recording, source, "runs/19")
    assert recording.puts() == []
