"""The host cache: content-addressed, verified, LRU-bounded, one download per host."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from fairskin.store.cache import HashMismatch, HostCache
from fairskin.store.errors import ArtifactCorrupt
from tests.fairskin.store.helpers import fetch_in_process, sha


def writer(data: bytes):
    calls: list[Path] = []

    def fetch(tmp: Path) -> None:
        calls.append(tmp)
        tmp.write_bytes(data)

    return fetch, calls


def test_miss_then_hit(tmp_path):
    cache = HostCache(tmp_path, max_bytes=0)
    data = b"lora weights"
    fetch, calls = writer(data)
    first = cache.get_or_fetch(sha(data), len(data), fetch)
    second = cache.get_or_fetch(sha(data), len(data), fetch)
    assert first == second == tmp_path / "objects" / sha(data)[:2] / sha(data)
    assert first.read_bytes() == data
    assert len(calls) == 1
    assert (cache.hits, cache.misses, cache.bytes_downloaded) == (1, 1, len(data))


def test_wrong_bytes_are_refused_and_not_cached(tmp_path):
    cache = HostCache(tmp_path, max_bytes=0)
    expected = b"the real thing"
    fetch, _ = writer(b"something else")
    with pytest.raises(HashMismatch) as mismatch:
        cache.get_or_fetch(sha(expected), len(expected), fetch)
    assert isinstance(mismatch.value, ArtifactCorrupt)
    assert mismatch.value.expected == sha(expected)
    assert mismatch.value.actual == sha(b"something else")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "locks" not in p.parts]
    assert cache.misses == 0


def test_right_hash_wrong_size_is_refused(tmp_path):
    cache = HostCache(tmp_path, max_bytes=0)
    data = b"abc"
    fetch, _ = writer(data)
    with pytest.raises(HashMismatch, match="expected"):
        cache.get_or_fetch(sha(data), 4, fetch)


def test_a_failed_download_leaves_nothing(tmp_path):
    cache = HostCache(tmp_path, max_bytes=0)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise ConnectionError("dropped")

    with pytest.raises(ConnectionError):
        cache.get_or_fetch("a" * 64, 10, broken)
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]


def test_bad_hash_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a sha256"):
        HostCache(tmp_path, 0).get_or_fetch("../../etc", 1, writer(b"")[0])


def test_lru_eviction_keeps_under_the_bound_and_drops_the_least_recently_used(tmp_path):
    cache = HostCache(tmp_path, max_bytes=3000)
    blobs = [bytes([i]) * 1000 for i in range(3)]
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(cache.get_or_fetch(sha(blob), len(blob), writer(blob)[0]))
        os.utime(paths[-1], ns=(0, (i + 1) * 1_000_000_000))  # a clear age order
    # Use the oldest one again: it becomes the most recently used.
    cache.get_or_fetch(sha(blobs[0]), 1000, writer(blobs[0])[0])
    assert cache.hits == 1
    fourth = b"\x09" * 1000
    cache.get_or_fetch(sha(fourth), len(fourth), writer(fourth)[0])
    assert cache.total_bytes() <= 3000
    assert paths[0].exists(), "recently used: kept"
    assert not paths[1].exists(), "least recently used: evicted"
    assert paths[2].exists()


def test_eviction_never_removes_the_object_just_added(tmp_path):
    cache = HostCache(tmp_path, max_bytes=500)
    small = b"s" * 100
    cache.get_or_fetch(sha(small), 100, writer(small)[0])
    big = b"B" * 2000  # larger than the whole cache
    path = cache.get_or_fetch(sha(big), 2000, writer(big)[0])
    assert path.read_bytes() == big
    assert not cache.path_for(sha(small)).exists()


def test_unbounded_cache_keeps_everything(tmp_path):
    cache = HostCache(tmp_path, max_bytes=0)
    for i in range(5):
        blob = bytes([i]) * 1000
        cache.get_or_fetch(sha(blob), 1000, writer(blob)[0])
    assert cache.total_bytes() == 5000


@pytest.mark.slow
def test_two_processes_download_the_same_object_once(tmp_path):
    data = os.urandom(200_000)
    log = tmp_path / "downloads.log"
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3  # both spawned interpreters are up by then
    with context.Pool(2) as pool:
        results = pool.starmap(
            fetch_in_process, [(str(tmp_path / "cache"), data, str(log), start_at)] * 2
        )
    assert results[0] == results[1]
    assert Path(results[0]).read_bytes() == data
    assert len(log.read_text().splitlines()) == 1, "downloaded once for the whole host"
