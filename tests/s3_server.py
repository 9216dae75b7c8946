"""An S3-protocol server for the tests: moto's standalone server in a subprocess on 127.0.0.1.

Why moto: the MinIO binary is not available on these machines (nor installable through pip),
while `moto[server]` is a pinned, hash-checked wheel like every other test dependency; and moto
can enforce IAM authentication, so a wrong secret is really refused, as a real store would.

Authentication is switched on with INITIAL_NO_AUTH_ACTION_COUNT: moto serves that many
requests without checking credentials, which create an IAM user, its access key, and a policy
allowing s3:* attached to it; every request after that is signed-checked against that key.
The server runs as a separate process (not moto's in-process ThreadedMotoServer) so that it
behaves like a remote service: its own interpreter, real HTTP on a real socket.

`start_moto_server` is also what bench/artifact_store.py uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
# create_user, create_access_key, create_policy, attach_user_policy
UNAUTHENTICATED_SETUP_REQUESTS = 4
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def _boto3() -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    # A TCP connect, not an HTTP request: every HTTP request counts against the
    # unauthenticated allowance.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on port {port} within 60 s")


@dataclass
class S3Server:
    """A running moto server, the IAM key it enforces, and one bucket made for the session."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, *, secret_key: str | None = None, access_key: str | None = None) -> Any:
        return _boto3().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )

    def make_bucket(self, prefix: str = "t") -> str:
        """A fresh, empty bucket, created with the enforced credentials."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_settings(self, bucket: str | None = None) -> dict[str, str]:
        """Keyword arguments for S3ObjectStore / open_store (bucket included)."""
        return {
            "bucket": bucket or self.bucket,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_moto_server(log_dir: Path) -> S3Server:
    """Start `python -m moto.server` with IAM authentication on; a user allowed s3:*."""
    port = _free_port()
    log = log_dir / f"moto-{port}.log"
    env = {
        **os.environ,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_SETUP_REQUESTS),
        "AWS_DEFAULT_REGION": REGION,
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(port, proc, log)
        iam = _boto3().client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name=REGION,
        )
        iam.create_user(UserName="fairskin-tests")
        key = iam.create_access_key(UserName="fairskin-tests")["AccessKey"]
        policy = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps(ALLOW_S3))
        iam.attach_user_policy(UserName="fairskin-tests", PolicyArn=policy["Policy"]["Arn"])
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    server = S3Server(
        endpoint_url=endpoint,
        access_key=key["AccessKeyId"],
        secret_key=key["SecretAccessKey"],
        region=REGION,
        proc=proc,
    )
    server.bucket = server.make_bucket("session")
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the whole session, authentication on (see the module docstring)."""
    server = start_moto_server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    return s3_server.make_bucket()
