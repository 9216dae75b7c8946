"""Objects in an S3-compatible bucket (AWS, MinIO, moto), through boto3.

boto3 is imported when the first request is made, so importing the engine never pays for it.
One client per store, created once under a lock; boto3 clients are safe to share across
threads. Every botocore failure is translated into StoreUnavailable (the bucket, endpoint or
credentials are wrong: nothing will work) or ArtifactMissing (this one object is absent).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fairskin.store.errors import ArtifactMissing, StoreError, StoreUnavailable
from fairskin.store.keys import temp_path_beside, validate_key, validate_prefix

DELETE_BATCH = 1000  # delete_objects takes at most 1000 keys
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}


@functools.cache
def _failures() -> tuple[type[Exception], ...]:
    """What a boto3 call raises when the store (not this process) fails."""
    from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    return (BotoCoreError, ClientError, Boto3Error)


def masked(access_key: str | None) -> str:
    """An access key as messages show it: enough to recognise, not enough to reuse."""
    if not access_key:
        return "none (boto3's default credential chain)"
    if len(access_key) <= 8:
        return access_key[:2] + "…"
    return f"{access_key[:4]}…{access_key[-3:]}"


class S3ObjectStore:
    """A bucket of objects, keys as given (no prefix added)."""

    local_root: Path | None = None

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str | None,
    ) -> None:
        if not bucket:
            raise ValueError("S3ObjectStore needs a bucket name (AWS_STORAGE_BUCKET_NAME)")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]

                config = Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                    max_pool_connections=32,
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self.access_key,
                    aws_secret_access_key=self.secret_key,
                    region_name=self.region,
                    config=config,
                )
            return self._client

    def describe(self) -> str:
        return f"s3://{self.bucket} ({self.endpoint_url or 'AWS'})"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    def _translate(self, error: Exception, key: str | None = None) -> StoreError:
        """The StoreError a botocore/boto3 failure stands for, with what to do about it."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.endpoint_url or "AWS"
        cause = error.__context__ if not isinstance(error, ClientError | BotoCoreError) else None
        if isinstance(cause, ClientError):  # upload_file wraps it in S3UploadFailedError
            error = cause
        if isinstance(error, NoCredentialsError):
            return StoreUnavailable(
                f"no credentials for bucket {self.bucket!r} at {where}: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if not isinstance(error, ClientError):
            return StoreUnavailable(
                f"the store at {where} cannot be reached for bucket {self.bucket!r} ({error}); "
                "check AWS_S3_ENDPOINT_URL and that the service is running"
            )
        code = str(error.response.get("Error", {}).get("Code", ""))
        key_ = masked(self.access_key)
        if code == "NoSuchBucket":
            return StoreUnavailable(
                f"bucket {self.bucket!r} does not exist at {where}; create it or fix "
                "AWS_STORAGE_BUCKET_NAME"
            )
        if code in CREDENTIAL_CODES:
            what = {
                "SignatureDoesNotMatch": "the secret key does not match",
                "InvalidAccessKeyId": "the access key is unknown to the store",
            }.get(code, code)
            return StoreUnavailable(
                f"the store refused the credentials (access key {key_}): {what}; check "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for bucket {self.bucket!r} at {where}"
            )
        if code in DENIED_CODES:
            return StoreUnavailable(
                f"the store denied access to bucket {self.bucket!r} at {where} "
                f"(access key {key_}); grant this key s3:GetObject, s3:PutObject, "
                "s3:DeleteObject and s3:ListBucket on it"
            )
        if key is not None and code in MISSING_KEY_CODES:
            return ArtifactMissing(f"object {key!r} is not in bucket {self.bucket!r} at {where}")
        return StoreError(f"the store at {where} failed on bucket {self.bucket!r}: {error}")

    def check(self) -> None:
        # A listing, not head_bucket: a HEAD response has no body, so a 403 would not say
        # whether the key is unknown, the secret wrong, or the policy too narrow.
        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except _failures() as error:
            raise self._translate(error) from error

    def put_file(self, key: str, path: Path) -> None:
        validate_key(key)
        try:
            self.client.upload_file(str(path), self.bucket, key)
        except _failures() as error:  # a missing local file raises its own OSError
            raise self._translate(error, key) from error

    def put_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except _failures() as error:
            raise self._translate(error, key) from error

    def _get_body(self, key: str) -> Any:
        validate_key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except _failures() as error:
            raise self._translate(error, key) from error

    def get_file(self, key: str, dest: Path) -> None:
        body = self._get_body(key)
        tmp = temp_path_beside(dest)
        try:
            with body, open(tmp, "wb") as out:
                try:
                    for chunk in body.iter_chunks(1 << 20):
                        out.write(chunk)
                except _failures() as error:
                    raise self._translate(error, key) from error
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        body = self._get_body(key)
        try:
            with body:
                return bytes(body.read())
        except _failures() as error:
            raise self._translate(error, key) from error

    def open_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        body = self._get_body(key)  # now, so a missing object raises before the first chunk
        return self._chunks(body, key, chunk_size)

    def _chunks(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        with body:
            try:
                yield from body.iter_chunks(chunk_size)
            except _failures() as error:
                raise self._translate(error, key) from error

    def exists(self, key: str) -> bool:
        # A one-key listing, not head_object: a HEAD's 404 cannot tell a missing object from a
        # missing bucket. The key itself, if present, sorts first among keys it prefixes.
        validate_key(key)
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except _failures() as error:
            raise self._translate(error, key) from error
        return any(item["Key"] == key for item in page.get("Contents", ()))

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", ()))
        except _failures() as error:
            raise self._translate(error) from error
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        pending = [validate_key(key) for key in keys]
        for start in range(0, len(pending), DELETE_BATCH):
            batch = pending[start : start + DELETE_BATCH]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except _failures() as error:
                raise self._translate(error) from error
            failed = response.get("Errors") or []
            if failed:
                first = failed[0]
                raise StoreError(
                    f"the store at {self.endpoint_url or 'AWS'} did not delete {len(failed)} "
                    f"object(s) from bucket {self.bucket!r}, e.g. {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )
