"""Private, throw-away service processes for the fault scenarios.

The machine's shared PostgreSQL (5432) and Redis (6379) are never stopped: each scenario that
takes a service down starts its own copy on a free port, in a temporary folder, and stops only
that one.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(path: str | None, what: str) -> str:
    """The path of a binary a scenario needs. Missing: a failure in CI, else a skip."""
    if path and Path(path).exists():
        return path
    message = f"{what} is not installed; this fault scenario needs a real one"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class PrivateRedis:
    """A redis-server of our own: no persistence, on a free port, stopped and started at will."""

    def __init__(self, log_path: Path) -> None:
        self.binary = require(shutil.which("redis-server"), "redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None
        assert not accepts_connections(self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


def _pg_bin(name: str) -> str:
    for candidate in [
        f"/usr/local/bin/{name}",
        *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True),
        shutil.which(name),
    ]:
        if candidate and Path(candidate).exists():
            return candidate
    return require(None, f"PostgreSQL's {name}")


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, trust auth, a free port).

    PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to
    the `postgres` account and its commands run through `runuser`.
    """

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        self.port = free_port()
        # Not under pytest's temporary folders: those are private to root, and the server
        # runs as `postgres`.
        self.folder = Path(tempfile.mkdtemp(prefix="fairskin-faults-pg-"))
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self.log_path = self.folder / "postgres.log"
        self.as_postgres: list[str] = []
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            runuser = require(shutil.which("runuser"), "runuser")
            self.as_postgres = [runuser, "-u", "postgres", "--"]
            for path in (self.folder, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self.as_postgres, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
        )
        if result.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}\n{log[-2000:]}"
            )

    def init(self) -> None:
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=40"
        )

    def start(self) -> None:
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            self._options(),
            "-w",
            "-t",
            "30",
            "start",
        )

    def restart(self, mode: str = "fast") -> None:
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            self._options(),
            "-m",
            mode,
            "-w",
            "-t",
            "30",
            "restart",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the cluster if it runs, and delete it."""
        if self.running:
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
