"""`make run` on a bare machine: SQLite, the filesystem broker, a real worker, a real browser."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.browser]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "SECRET_KEY",
            "DEBUG",
            "SECURE_SSL_REDIRECT",
            "DJANGO_SETTINGS_MODULE",
            "MEDIA_ROOT",
        }
    }
    env.update(PORT=str(port), FAIRSKIN_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "make-run.log", "wb")
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health/", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            pytest.fail("make run did not come up:\n" + (tmp_path / "make-run.log").read_text())
        time.sleep(0.5)
    yield base, proc, tmp_path / "make-run.log"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def sign_in(page, base, username):
    page.goto(f"{base}/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-fairskin-demo")  # printed by make run
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_make_run_serves_each_role_and_runs_jobs_on_the_embedded_broker(
    running_app, browser, screenshot
):
    base, proc, log_path = running_app
    assert "derm1-fairskin-demo" in log_path.read_text()  # credentials were printed

    landings = {
        "derm1": "Your rating assignments",
        "lead": "Lead overview",
        "engineer": "Engineering",
    }
    for username, heading in landings.items():
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        page = context.new_page()
        sign_in(page, base, username)
        assert page.locator("h1, h2").filter(has_text=heading).count() == 1
        screenshot(page, f"make-run-home-{username}")
        if username == "derm1":
            assert page.goto(f"{base}/admin/").status == 403
            assert page.goto(f"{base}/jobs/").status == 403
        if username == "engineer":
            page.goto(f"{base}/jobs/")
            page.fill("#id_steps", "5")
            page.fill("#id_pause_s", "0.1")
            page.click("text=Launch worker check")
            page.wait_for_selector("[data-testid=job-state]:has-text('Succeeded')", timeout=60_000)
            assert "5 / 5" in page.inner_text("[data-testid=job-progress]")
            screenshot(page, "make-run-worker-check")
        context.close()
    assert proc.poll() is None
