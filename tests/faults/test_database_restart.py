"""Fault: PostgreSQL restarts while dermatologists are rating.

A private PostgreSQL cluster (initdb in a temporary folder, a free port) holds a migrated
FairSkin database with an open study seeded by `seed_load_study`; gunicorn serves the app on
it with DEBUG off, as in production. The shared PostgreSQL on 5432 is never touched.

- Over HTTP, several raters rate in threads (sign-in form, the queue API, POST /api/ratings/
  with the CSRF token, as the rating screen does) while that PostgreSQL is stopped for a few
  seconds and started again. Each rater sends a refused rating again until it is
  acknowledged. Every acknowledged rating must be stored exactly once with its score, nothing
  unacknowledged may be stored, requests during the outage must get a 503 with a JSON reason
  (not an HTML 500), and requests after the restart must succeed without restarting the app.
- In headless Chromium, a rater presses a key while the database is down: the screen must say
  that the rating was not saved and to press again; after the restart, pressing again saves
  it and moves on.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from fairskin_site.middleware import READ_DETAIL, WRITE_DETAIL
from tests.conftest import ROOT, sign_in_page
from tests.faults.processes import PrivatePostgres, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "load-derm-password"  # seed_load_study's accounts
RATERS = 6  # load-derm-1..5 rate over HTTP, load-derm-6 in the browser
HTTP_RATERS = [f"load-derm-{i}" for i in range(1, 6)]
BROWSER_RATER = "load-derm-6"
ITEMS = 40  # synthetic images; with the controls each rater has 50 items
OUTAGE_S = 3.0
RETRY_MESSAGE = (
    "The server is unavailable, so your rating (6) may not have been saved. "
    "Press any rating key to send it again."
)


@dataclass
class Site:
    pg: PrivatePostgres
    database: str
    url: str
    study_id: int
    server: subprocess.Popen
    log_path: Path

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.pg.url(self.database), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def ratings(self, usernames: list[str]) -> list[tuple[str, str, int]]:
        """(rater, token, score) of every stored rating of these raters in the study."""
        return self.query(
            "SELECT u.username, a.token, r.score FROM review_rating r "
            "JOIN review_assignment a ON a.id = r.assignment_id "
            "JOIN auth_user u ON u.id = r.rater_id "
            "WHERE r.study_id = %s AND u.username = ANY(%s)",
            self.study_id,
            usernames,
        )

    def created_audits(self, usernames: list[str]) -> list[tuple[str, int]]:
        """(token, times) for every assignment audited as created."""
        return self.query(
            "SELECT a.token, count(*) FROM review_ratingaudit x "
            "JOIN review_assignment a ON a.id = x.assignment_id "
            "JOIN auth_user u ON u.id = x.rater_id "
            "WHERE x.study_id = %s AND x.action = 'created' AND u.username = ANY(%s) "
            "GROUP BY a.token",
            self.study_id,
            usernames,
        )

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("db-restart")
    pg = PrivatePostgres()
    server = None
    try:
        pg.init()
        pg.start()
        pg.create_database("fairskin_faults_site")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.faults.site_settings",
            "DATABASE_URL": pg.url("fairskin_faults_site"),
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "SECURE_HSTS_SECONDS": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "FAIRSKIN_VAR_DIR": str(folder / "var"),
            "MEDIA_ROOT": str(folder / "media"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("CELERY_BROKER_URL", None)  # nothing is queued; keep off the shared Redis
        _manage(env, "migrate", "--noinput", "-v", "0")
        seeded = _manage(
            env, "seed_load_study", "--raters", str(RATERS), "--items", str(ITEMS), "--seed", "3"
        )
        study_id = int(re.search(r"^LOAD_STUDY_ID=(\d+)$", seeded, re.M).group(1))
        port = free_port()
        log_path = folder / "gunicorn.log"
        with open(log_path, "ab") as log:
            # As scripts/load.sh runs it: sync workers, one thread each.
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "fairskin_site.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "3",
                    "--threads",
                    "1",
                    "--timeout",
                    "30",
                    "--no-control-socket",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/accounts/login/", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield Site(pg, "fairskin_faults_site", url, study_id, server, log_path)
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        pg.remove()


def sign_in(site: Site, username: str) -> tuple[requests.Session, str]:
    session = requests.Session()
    session.get(f"{site.url}/accounts/login/", timeout=10)
    response = session.post(
        f"{site.url}/accounts/login/",
        allow_redirects=False,
        timeout=10,
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, f"{username} not signed in: {response.status_code}"
    return session, session.cookies["csrftoken"]  # rotated at sign-in


@dataclass
class Answer:
    sent: float  # monotonic time the request was sent
    method: str
    status: int  # 0: no HTTP answer at all
    json: dict | None
    retry_after: str | None


@dataclass
class HttpRater:
    """One dermatologist working through the queue the way the rating screen does."""

    site: Site
    username: str
    stop: threading.Event
    seed: int
    acks: list[tuple[float, str, int, bool]] = field(default_factory=list)  # sent, token...
    answers: list[Answer] = field(default_factory=list)
    error: BaseException | None = None

    def call(self, session, method: str, url: str, **kwargs) -> Answer:
        sent = time.monotonic()
        try:
            response = session.request(method, url, timeout=15, **kwargs)
        except requests.RequestException:
            answer = Answer(sent, method, 0, None, None)
        else:
            try:
                body = response.json()
            except ValueError:
                body = None
            answer = Answer(
                sent, method, response.status_code, body, response.headers.get("Retry-After")
            )
        self.answers.append(answer)
        return answer

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(self.seed)
        session, csrf = sign_in(self.site, self.username)
        queue_url = f"{self.site.url}/api/rater/studies/{self.site.study_id}/queue/"
        deadline = time.monotonic() + 90
        while not self.stop.is_set() and time.monotonic() < deadline:
            answer = self.call(session, "GET", queue_url)
            if answer.status != 200:
                time.sleep(0.2)
                continue
            current = answer.json["current"]
            if current is None:
                return  # finished the study
            time.sleep(rng.uniform(0.1, 0.3))  # looking at the image
            score = rng.randint(1, 7)
            # The same rating again until it is acknowledged, as the screen's retry does:
            # even after stop is set, so that nothing is left unacknowledged.
            while time.monotonic() < deadline:
                answer = self.call(
                    session,
                    "POST",
                    f"{self.site.url}/api/ratings/",
                    json={"token": current["token"], "score": score, "seconds": 0.2},
                    headers={"X-CSRFToken": csrf},
                )
                if answer.status in (200, 201):
                    self.acks.append((answer.sent, current["token"], score, answer.json["created"]))
                    break
                if answer.status != 503:
                    return  # unexpected: the test reports it
                time.sleep(0.2)


def wait_until(
    predicate, timeout: float, what: str, site: Site, threads: list[threading.Thread]
) -> str:
    """Wait for the raters to get somewhere. Returns what went wrong ("" if nothing): a
    timeout, or raters that gave up (on an answer the test then reports)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        quit_early = [t.name for t in threads if not t.is_alive()]
        if quit_early:
            return f"{', '.join(quit_early)} stopped before {what}"
        if time.monotonic() > deadline:
            return f"timed out waiting for {what}\n{site.server_log()}"
        time.sleep(0.05)
    return ""


def test_ratings_survive_a_postgres_restart_and_refusals_are_clear(site):
    pg = site.pg
    server_pid = site.server.pid
    stop = threading.Event()
    raters = [HttpRater(site, name, stop, seed=n) for n, name in enumerate(HTTP_RATERS)]
    threads = [threading.Thread(target=r.run, name=r.username) for r in raters]
    observer, _ = sign_in(site, HTTP_RATERS[0])  # a second tab of the first rater
    rate_page = f"{site.url}/review/studies/{site.study_id}/rate/"
    for thread in threads:
        thread.start()
    page = None
    try:
        problem = wait_until(
            lambda: all(len(r.acks) >= 2 for r in raters),
            60,
            "two ratings from every rater",
            site,
            threads,
        )
        if not problem:
            down_at = time.monotonic()
            pg.stop("fast")
            stopped_s = time.monotonic() - down_at
            page = observer.get(rate_page, timeout=15)  # a page, not the API, in the outage
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            pg.start()
            up_at = time.monotonic()
            problem = wait_until(
                lambda: all(sum(sent > up_at for sent, *_ in r.acks) >= 3 for r in raters),
                60,
                "three ratings from every rater after the restart",
                site,
                threads,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if not pg.running:
            pg.start()
    assert all(not t.is_alive() for t in threads)
    assert [r.error for r in raters] == [None] * len(raters)
    answers = [a for r in raters for a in r.answers]
    unexpected = [a for a in answers if a.status not in (200, 201, 503)]
    assert unexpected == [], site.server_log()
    assert not problem, problem
    refused = [a for a in answers if a.status == 503]
    assert refused, "no request met the outage"
    for answer in refused:
        detail = WRITE_DETAIL if answer.method == "POST" else READ_DETAIL
        assert answer.json == {"detail": detail} and answer.retry_after == "5"
        # Sent before PostgreSQL came back (a request sent earlier may queue for a worker and
        # meet the outage, so there is no lower bound).
        assert answer.sent <= up_at, "a 503 for a request sent after the restart"
    # After the restart the same gunicorn workers reconnect: no request sent after PostgreSQL
    # was back was refused, and the app was not restarted.
    assert not [a for a in answers if a.sent > up_at and a.status == 503]
    assert site.server.poll() is None and site.server.pid == server_pid
    assert page.status_code == 503 and "text/html" in page.headers["Content-Type"]
    assert READ_DETAIL in page.text and "Server Error (500)" not in page.text

    # Exactly once: every acknowledged rating is stored with its score, and nothing else is.
    acked = {(r.username, token, score) for r in raters for _, token, score, _ in r.acks}
    acks = [(r.username, token) for r in raters for _, token, _, _ in r.acks]
    assert len(acks) == len(set(acks))
    stored = site.ratings(HTTP_RATERS)
    assert len(stored) == len(set(stored)) == len({(u, t) for u, t, _ in stored})
    assert set(stored) == acked
    audits = site.created_audits(HTTP_RATERS)
    assert len(audits) == len(acked) and {n for _, n in audits} == {1}

    refused_posts = sum(a.method == "POST" for a in refused)
    already_stored = sum(not created for r in raters for *_, created in r.acks)
    print(
        f"\n{len(raters)} raters, {len(answers)} requests: {len(acked)} ratings "
        f"acknowledged, {len(stored)} stored, {len(acked - set(stored))} lost; "
        f"{len(refused)} answered 503 during the outage ({refused_posts} rating POSTs, "
        f"{len(refused) - refused_posts} queue GETs), {already_stored} retries found the "
        f"rating already stored; PostgreSQL stop took {stopped_s:.1f}s, outage "
        f"{up_at - down_at:.1f}s"
    )


def test_a_quick_restart_goes_unnoticed_by_the_next_requests(site):
    """`pg_ctl restart -m fast` while nobody is mid-request: every gunicorn worker still holds
    its connection from before, now dead. The health check on first use in a request
    (CONN_HEALTH_CHECKS) reconnects, so not even the first request after it fails."""
    pg = site.pg
    if not pg.running:
        pg.start()
    session, csrf = sign_in(site, HTTP_RATERS[-1])
    queue_url = f"{site.url}/api/rater/studies/{site.study_id}/queue/"
    # The workers serve these (and served the previous test) and keep their connections.
    assert [session.get(queue_url, timeout=15).status_code for _ in range(9)] == [200] * 9
    started = time.monotonic()
    pg.restart("fast")
    restart_s = time.monotonic() - started
    statuses = [session.get(queue_url, timeout=15).status_code for _ in range(12)]
    assert statuses == [200] * 12
    current = session.get(queue_url, timeout=15).json()["current"]
    response = session.post(
        f"{site.url}/api/ratings/",
        timeout=15,
        json={"token": current["token"], "score": 4, "seconds": 1.0},
        headers={"X-CSRFToken": csrf},
    )
    assert response.status_code == 201, response.text
    assert (HTTP_RATERS[-1], current["token"], 4) in site.ratings([HTTP_RATERS[-1]])
    print(f"\npg_ctl restart -m fast took {restart_s:.1f}s; the next 12 requests all 200")


@pytest.mark.browser
def test_rating_screen_asks_to_retry_during_the_outage_and_saves_after(site, browser, screenshot):
    from playwright.sync_api import expect

    pg = site.pg
    if not pg.running:
        pg.start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in_page(page, site.url, BROWSER_RATER, PASSWORD)
    page.goto(f"{site.url}/review/studies/{site.study_id}/rate/")
    page.get_by_role("button", name="I have read the instructions").click()
    progress = page.get_by_test_id("rating-progress")
    status = page.locator("#status")
    expect(progress).to_have_text(re.compile(r"^1 / \d+$"))
    expect(page.locator("button[data-score='6']")).to_be_enabled()
    total = int(progress.inner_text().split("/")[1])

    pg.stop("fast")
    try:
        page.keyboard.press("6")
        expect(status).to_have_text(RETRY_MESSAGE, timeout=15_000)
        expect(progress).to_have_text(f"1 / {total}")  # still on the same image
        expect(page.locator("button[data-score='6']")).to_be_enabled()
        screenshot(page, "fault-rating-retry")
    finally:
        pg.start()
    assert site.ratings([BROWSER_RATER]) == []  # refused, so not stored

    # Another key retries the same rating: its fate was unknown, and a stored rating is
    # locked, so the screen sends the 6 again (answered as created or as a repeat).
    page.keyboard.press("3")
    expect(progress).to_have_text(f"2 / {total}")
    expect(status).to_have_text("")
    expect(page.locator("button[data-score='5']")).to_be_enabled()
    page.keyboard.press("5")
    expect(progress).to_have_text(f"3 / {total}")
    stored = site.ratings([BROWSER_RATER])
    assert sorted(score for _, _, score in stored) == [5, 6]
    context.close()
