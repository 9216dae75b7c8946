"""Shared fixtures: users per role, and real Celery workers for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.factories import PASSWORD, make_user

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engineer(db):
    return make_user("engineer")


@pytest.fixture
def lead(db):
    return make_user("lead")


@pytest.fixture
def dermatologist(db):
    return make_user("dermatologist")


def _needs_real_services() -> None:
    from django.conf import settings

    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("needs PostgreSQL and Redis (make test falls back without them)")


def _purge_broker() -> None:
    from fairskin_site.celery import QUEUES, app

    with app.connection_for_write() as conn:
        for queue in QUEUES:
            conn.default_channel.queue_purge(queue)


class WorkerProcess:
    """A real `celery worker` process on the test database and the test broker."""

    def __init__(self, env: dict[str, str], log_path: Path, queues: str = "gpu,cpu") -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "fairskin_site",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queues,
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--hostname",
            f"test-{time.time_ns()}@%h",
        ]
        if env.get("WITH_BEAT"):
            cmd += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: a worker dying without any chance to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(
    transactional_db, django_db_serialized_rollback, tmp_path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real Celery worker processes against the test database and Redis.

    Tests using it need committed data (transactional_db), because the worker is another
    process with its own connection.
    """
    _needs_real_services()
    from django.conf import settings

    _purge_broker()
    db = connection.settings_dict
    workers: list[WorkerProcess] = []

    def start(queues: str = "gpu,cpu", **extra_env: str) -> WorkerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            **extra_env,
        }
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log", queues=queues)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    _purge_broker()


def wait_for(
    predicate: Callable[[], object], *, timeout: float, what: str, workers: list[WorkerProcess] = ()
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(w.output()[-3000:] for w in workers)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an asyncio loop on the test thread while it
    runs, which makes Django refuse ORM calls from that thread. The browser modules' ORM calls
    are ordinary synchronous ones, so the guard is lifted for them only, and restored after.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


def sign_in_page(page, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login page, as a user does (the factories' password)."""
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def settle_other_sessions(*, wait: float = 10.0) -> list[int]:
    """Let the live server's request threads finish their queries; end any other session on
    the test database still busy after ``wait`` seconds (idle ones hold no lock and may be a
    connection the test itself goes on using); the pids ended.

    The flush that ends a live-server test truncates every table in one statement. A request
    the page still had in flight (a progress poll, a thumbnail) takes its table locks in
    another order, and PostgreSQL breaks the deadlock by failing the flush, which leaves rows
    behind for the next test (CI saw exactly this).
    """
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'"
    )
    if connection.vendor != "postgresql":  # SQLite's fallback: one process, no such locks
        return []
    deadline = time.monotonic() + wait
    with connection.cursor() as cursor:
        while True:
            cursor.execute(query)
            if not cursor.fetchall():
                return []  # settled: end nothing (a query starting now is not stuck)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        cursor.execute(query.replace("SELECT pid", "SELECT pid, pg_terminate_backend(pid)", 1))
        return [pid for pid, _ in cursor.fetchall()]


@pytest.fixture(autouse=True)
def _live_server_settles_before_flush(request):
    """For a live-server test: after it (its browser contexts closed, so no page polls on),
    the server's requests settle before pytest-django's flush runs (see
    ``settle_other_sessions``). Requesting transactional_db here orders this teardown first."""
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")
    chromium = request.getfixturevalue("browser") if "browser" in request.fixturenames else None
    yield
    if chromium is not None:
        for context in chromium.contexts:
            context.close()
    settle_other_sessions()


def _plain_flush(item) -> bool:
    """Whether the test ends with a plain flush (transactional, no serialized rollback).

    A test driving Chromium does, whatever it asks for: Playwright's sync API runs the test
    in a greenlet with its own context, where Django's `connections` hands pytest-django's
    teardown a connection object without the serialized data, so the flush re-creates the
    content types and the next test restoring serialized data collides with them.
    """
    marker = item.get_closest_marker("django_db")
    names = getattr(item, "fixturenames", ())
    if "browser" in names and ("transactional_db" in names or "live_server" in names):
        return True
    if marker is not None and marker.kwargs.get("transaction"):
        return not marker.kwargs.get("serialized_rollback")
    return (
        "transactional_db" in names or "live_server" in names
    ) and "django_db_serialized_rollback" not in names


def pytest_collection_modifyitems(items):
    """Tests that end with a plain flush (the browser tests: a live server needs committed
    data) run last: a test restoring serialized data after such a flush would collide with
    the content types the flush re-creates, so none may follow them."""
    items.sort(key=_plain_flush)


# Issue 20: this process as a web host of a deployment on a bucket; the S3-protocol server
# (moto, authentication on) and a fresh bucket per test.
from tests.bucket_site import bucket_site  # noqa: E402, F401
from tests.s3_server import s3_bucket, s3_server  # noqa: E402, F401
