"""Both object stores (a local folder and moto's S3 server) behave the same way."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fairskin.store.errors import ArtifactMissing, StoreUnavailable
from fairskin.store.objects import LocalObjectStore, S3ObjectStore, open_store
from tests.fairskin.store.helpers import make_store


def test_round_trips_bytes_files_and_chunks(store, tmp_path):
    store.check()
    source = tmp_path / "source.bin"
    payload = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
    source.write_bytes(payload)
    store.put_file("runs/1/weights.bin", source)
    store.put_bytes("runs/1/notes.txt", b"hello")

    assert store.get_bytes("runs/1/notes.txt") == b"hello"
    dest = tmp_path / "out" / "weights.bin"
    dest.parent.mkdir()
    store.get_file("runs/1/weights.bin", dest)
    assert dest.read_bytes() == payload
    chunks = list(store.open_chunks("runs/1/weights.bin", chunk_size=1 << 20))
    assert len(chunks) == 2
    assert b"".join(chunks) == payload
    assert store.exists("runs/1/notes.txt")
    assert not store.exists("runs/1/other")
    assert not store.exists("runs/1"), "a prefix of keys is not an object"
    assert not store.exists("runs/1/notes"), "nor is a prefix of a key"
    assert store.list_keys("runs/1/") == ["runs/1/notes.txt", "runs/1/weights.bin"]
    assert store.list_keys("runs/1/n") == ["runs/1/notes.txt"]
    assert store.list_keys("runs/2/") == []
    assert not list(dest.parent.glob(".tmp*")), "no temporary file left beside the target"


def test_overwrite_replaces_and_delete_removes(store):
    store.put_bytes("a/x", b"one")
    store.put_bytes("a/x", b"two")
    assert store.get_bytes("a/x") == b"two"
    store.put_bytes("a/y", b"3")
    store.delete(["a/x", "a/never-there"])
    assert store.list_keys("a/") == ["a/y"]


def test_missing_objects_raise_artifact_missing_naming_the_key(store, tmp_path):
    dest = tmp_path / "dest.bin"
    with pytest.raises(ArtifactMissing, match="runs/9/none"):
        store.get_bytes("runs/9/none")
    with pytest.raises(ArtifactMissing, match="runs/9/none"):
        store.get_file("runs/9/none", dest)
    assert not dest.exists()
    # Raised by the call itself, before anything is iterated.
    with pytest.raises(ArtifactMissing, match="runs/9/none"):
        store.open_chunks("runs/9/none")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/../b", "a\\b", "", "a/", "./a"])
def test_bad_keys_are_refused_and_nothing_is_written(store, key, tmp_path):
    with pytest.raises(ValueError, match="object key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="object key"):
        store.get_bytes(key)
    with pytest.raises(ValueError, match="object key"):
        store.uri(key)
    assert store.list_keys("") == []
    assert not (tmp_path / "x").exists()


def test_local_put_file_of_the_object_itself_is_a_no_op(tmp_path):
    store = LocalObjectStore(tmp_path)
    target = tmp_path / "runs" / "1" / "w.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    inode = target.stat().st_ino
    store.put_file("runs/1/w.bin", target)
    assert target.stat().st_ino == inode
    assert target.read_bytes() == b"weights"


def test_uri_and_describe(tmp_path, s3_server, s3_bucket):
    local = LocalObjectStore(tmp_path)
    assert local.uri("runs/1/a") == str(tmp_path / "runs" / "1" / "a")
    assert local.describe() == f"local folder {tmp_path}"
    s3 = make_store("s3", tmp_path, s3_server, s3_bucket)
    assert s3.uri("runs/1/a") == f"s3://{s3_bucket}/runs/1/a"
    assert s3.describe() == f"s3://{s3_bucket} ({s3_server.endpoint_url})"


def test_open_store_picks_the_bucket_only_when_one_is_named(tmp_path, s3_server):
    local = open_store(bucket="", local_root=tmp_path)
    assert isinstance(local, LocalObjectStore)
    assert local.local_root == tmp_path
    remote = open_store(local_root=tmp_path, **s3_server.store_settings())
    assert isinstance(remote, S3ObjectStore)
    assert remote.local_root is None
    remote.check()


def test_listing_and_deleting_more_than_one_page(s3_server, s3_bucket, tmp_path):
    """S3 lists and deletes at most 1000 keys per request: both must go on past the first."""
    store = make_store("s3", tmp_path, s3_server, s3_bucket)
    keys = [f"many/{i:05d}" for i in range(1203)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"x"), keys))
    store.put_bytes("other/keep", b"y")
    assert store.list_keys("many/") == keys
    store.delete(keys)
    assert store.list_keys("many/") == []
    assert store.list_keys("") == ["other/keep"]


def test_missing_bucket_is_unavailable_and_names_it(s3_server, tmp_path):
    store = make_store("s3", tmp_path, s3_server, "no-such-bucket-here")
    calls = (
        store.check,
        lambda: store.put_bytes("a", b"1"),
        lambda: store.get_bytes("a"),
        lambda: store.exists("a"),
        lambda: store.list_keys("a/"),
    )
    for call in calls:
        with pytest.raises(StoreUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
            call()
    source = tmp_path / "f"
    source.write_bytes(b"data")
    with pytest.raises(StoreUnavailable, match="no-such-bucket-here"):
        store.put_file("a", source)


def test_wrong_secret_is_refused(s3_server, s3_bucket, tmp_path):
    """Authentication is really on: the right key with a wrong secret gets nothing."""
    good = make_store("s3", tmp_path, s3_server, s3_bucket)
    good.put_bytes("secret/a", b"private")
    bad = S3ObjectStore(
        s3_bucket,
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        region=s3_server.region,
    )
    masked = f"{s3_server.access_key[:4]}…{s3_server.access_key[-3:]}"
    with pytest.raises(StoreUnavailable, match="secret key does not match") as refused:
        bad.check()
    assert masked in str(refused.value)
    assert s3_server.secret_key not in str(refused.value)
    with pytest.raises(StoreUnavailable, match="refused the credentials"):
        bad.get_bytes("secret/a")
    with pytest.raises(StoreUnavailable, match="refused the credentials"):
        bad.put_bytes("secret/a", b"overwritten")
    assert good.get_bytes("secret/a") == b"private"


def test_unknown_access_key_is_refused(s3_server, s3_bucket, tmp_path):
    bad = S3ObjectStore(
        s3_bucket,
        endpoint_url=s3_server.endpoint_url,
        access_key="AKIANOTAREALKEY123",
        secret_key="whatever",
        region=s3_server.region,
    )
    with pytest.raises(StoreUnavailable, match=r"access key AKIA…123\): the access key is unknown"):
        bad.check()


def test_unreachable_endpoint_is_unavailable(tmp_path):
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        store = S3ObjectStore(
            "b",
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key="a",
            secret_key="b",
            region="us-east-1",
        )
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.check()


def test_local_store_in_an_unwritable_place_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="cannot be created"):
        LocalObjectStore(blocker / "store").check()


def test_local_listing_skips_temporary_files(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("runs/1/a", b"1")
    (tmp_path / "runs" / "1" / ".tmp-a-xyz").write_bytes(b"half")
    assert store.list_keys("runs/") == ["runs/1/a"]
    assert isinstance(store.local_root, Path)
