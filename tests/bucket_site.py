"""This test process as a web host of a deployment on a bucket (issue 20): images through
django-storages and artifacts through jobs.artifacts in moto's S3 server (tests/s3_server.py),
and a working folder of its own. Worker processes get the same settings from the returned
environment."""

from __future__ import annotations

import pytest


@pytest.fixture
def bucket_site(s3_server, s3_bucket, settings, tmp_path):
    """This process as a web host of a deployment on the bucket: images (django-storages) and
    artifacts (jobs.artifacts) there, and a working folder of its own."""
    env = {
        "AWS_STORAGE_BUCKET_NAME": s3_bucket,
        "AWS_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_S3_REGION_NAME": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "FAIRSKIN_ARTIFACTS_SYNC_SECONDS": "0.5",
    }
    for name, value in env.items():
        setattr(settings, name, value)
    settings.FAIRSKIN_ARTIFACTS_SYNC_SECONDS = 0.5
    settings.FAIRSKIN_ARTIFACTS_ROOT = tmp_path / "web-host"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": s3_bucket,
                "endpoint_url": s3_server.endpoint_url,
                "region_name": s3_server.region,
                "access_key": s3_server.access_key,
                "secret_key": s3_server.secret_key,
                "default_acl": None,
                "file_overwrite": False,
            },
        },
    }
    return env
