"""Both object stores by name (a local folder; a bucket on moto's S3 server), and a cache."""

from __future__ import annotations

import pytest

from fairskin.store.cache import HostCache
from fairskin.store.objects import ObjectStore
from tests.fairskin.store.helpers import make_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return make_store("local", tmp_path, None, "")
    server = request.getfixturevalue("s3_server")
    return make_store("s3", tmp_path, server, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def cache(tmp_path) -> HostCache:
    return HostCache(tmp_path / "cache", max_bytes=0)
