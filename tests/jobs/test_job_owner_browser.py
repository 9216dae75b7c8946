"""The owner controls its jobs, seen in Chromium: a lead follows a study's preparation (its
phase and count), cancels it on the study page and resumes it; the job page points to the
study instead of offering controls of its own."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import lease
from jobs.models import Job, JobState
from review.models import Study, StudyState
from review.services.study import study_create
from tests.conftest import sign_in_page
from tests.factories import make_user
from tests.review.conftest import batch, raters  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_lead_cancels_and_resumes_a_study_preparation_on_its_page(
    transactional_db,
    live_server,
    browser,
    screenshot,
    batch,  # noqa: F811  (a fixture imported above)
    raters,  # noqa: F811
):
    make_user("lead", username="lead-owner")
    make_user("engineer", username="eng-owner")
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)
    # A worker is blinding its images: phase 4 of 10, started 20 s ago.
    lease.job_claim(job_id=study.job_id, worker="gpu0")
    Job.objects.filter(pk=study.job_id).update(
        progress_phase="Blinding images",
        progress_done=4,
        progress_total=10,
        phase_started_at=timezone.now() - timedelta(seconds=20),
        phase_start_done=0,
    )

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in_page(page, live_server.url, "lead-owner")
    page.goto(f"{live_server.url}/review/studies/{study.pk}/")
    assert page.inner_text("[data-testid=job-phase]") == "Blinding images"
    progress = page.inner_text("[data-testid=job-progress]")
    assert "4 / 10" in progress and "left" in progress  # an ETA while it runs
    screenshot(page, "owner-study-preparing")

    # The page follows the job by itself: the worker's next count shows without a reload.
    Job.objects.filter(pk=study.job_id).update(progress_done=6)
    page.wait_for_function(
        "document.querySelector('[data-testid=job-progress]').innerText.includes('6 / 10')"
    )
    page.click("[data-testid=cancel-preparation]")
    page.wait_for_selector("[data-testid=resume-preparation]")
    assert page.inner_text("[data-testid=study-state]") == "Preparation failed"
    assert "preparation cancelled by lead-owner" in page.content()
    job = Job.objects.get(pk=study.job_id)
    assert job.cancel_requested and job.state == JobState.RUNNING  # the worker stops it
    lease.job_mark_cancelled(job_id=job.pk, worker="gpu0")
    screenshot(page, "owner-study-cancelled")

    engineer = browser.new_context(viewport={"width": 1280, "height": 700}).new_page()
    sign_in_page(engineer, live_server.url, "eng-owner")
    engineer.goto(f"{live_server.url}/jobs/{study.job_id}/")
    owner = engineer.inner_text("[data-testid=job-owner]")
    assert f"study {study.pk}" in owner and "cancelled and resumed" in owner
    assert engineer.locator("form[action$='/resume/'] button").count() == 0
    assert "left" not in engineer.inner_text("[data-testid=job-progress]")  # no ETA now
    screenshot(engineer, "owner-job-page")

    page.click("[data-testid=resume-preparation]")
    page.wait_for_selector("[data-testid=cancel-preparation]")
    assert Study.objects.get(pk=study.pk).state == StudyState.PREPARING
    job = Job.objects.get(pk=study.job_id)
    assert job.state == JobState.QUEUED and job.attempts_left == job.attempt_limit - job.attempt
