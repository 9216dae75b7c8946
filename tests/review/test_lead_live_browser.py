"""The lead's pages in headless Chromium (issue 15): a study page's progress counts and a
release page's export state change while the page stays open (no reload); closing needs its
confirmation; and the rating screen's end and focus as a rater sees them."""

import pytest
from playwright.sync_api import expect

from jobs.runner import execute_job
from review.models import Assignment, Release, Study, StudyState
from review.services.rating import rater_queue, rating_submit
from tests.conftest import sign_in_page
from tests.review.conftest import open_study

pytestmark = [pytest.mark.slow, pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 900}


def rate(study, rater, n=None):
    done = 0
    while (n is None or done < n) and (
        current := rater_queue(study=study, rater=rater)["current"]
    ) is not None:
        rating_submit(token=current.token, rater=rater, score=7, seconds=3.0)
        done += 1


def test_the_lead_watches_progress_confirms_closing_and_sees_the_export_finish(
    transactional_db, live_server, browser, screenshot, batch, raters, lead
):
    study = open_study(batch, raters, sample_size=4, warmup_count=0, retest_share=0)
    per_rater = Assignment.objects.filter(study=study, rater=raters[0]).count()
    total = 3 * per_rater
    base = live_server.url
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, base, lead.username)
    page.goto(f"{base}/review/studies/{study.pk}/")
    page.evaluate("window.notReloaded = true")  # gone if the page reloads
    done = page.get_by_test_id("ratings-done")
    expect(done).to_have_text(f"0 of {total} ratings done")
    row = page.get_by_test_id("progress-row").filter(has_text=raters[0].username)

    rate(study, raters[0], n=2)
    expect(done).to_have_text(f"2 of {total} ratings done", timeout=10_000)
    expect(row).to_contain_text(f"{raters[0].username}2{per_rater}no")
    outlook = page.get_by_test_id("close-outlook")
    expect(outlook).to_contain_text("3 of 3 raters not finished")
    expect(outlook).to_contain_text("closing now fails criterion (d)")
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "lead-study-live-progress")

    rate(study, raters[0])
    rate(study, raters[1])
    expect(row).to_contain_text(f"{per_rater}{per_rater}yes", timeout=10_000)
    expect(outlook).to_contain_text("1 of 3 raters not finished (derm-3)")
    assert page.evaluate("window.notReloaded") is True

    # Closing without the confirmation: the browser will not send the form, and a form sent
    # without it (the required attribute removed) is refused by the server; nothing changes.
    page.get_by_test_id("close-study").click()
    assert not page.evaluate(
        "document.querySelector('[data-testid=confirm-close]').checkValidity()"
    )
    assert Study.objects.get(pk=study.pk).state == StudyState.OPEN
    page.evaluate("document.querySelector('[data-testid=confirm-close]').required = false")
    page.get_by_test_id("close-study").click()
    expect(page.locator(".messages")).to_contain_text("was not closed: tick the box")
    assert Study.objects.get(pk=study.pk).state == StudyState.OPEN
    screenshot(page, "lead-study-close-refused")

    rate(study, raters[2])
    expect(outlook).to_contain_text("All 3 raters finished", timeout=10_000)
    page.get_by_test_id("confirm-close").check()
    screenshot(page, "lead-study-close-confirm")
    page.get_by_test_id("close-study").click()
    expect(page.get_by_test_id("gate").locator("h2")).to_have_text("Gate: passed")
    expect(page.get_by_test_id("study-state")).to_have_text("Closed")
    screenshot(page, "lead-study-closed")

    page.get_by_test_id("confirm-approve").check()
    page.get_by_test_id("approve").click()
    release = Release.objects.get(study=study)
    expect(page.locator("h1")).to_have_text(f"Release {release.pk}")
    page.evaluate("window.notReloaded = true")
    expect(page.get_by_test_id("export-state")).to_have_text("queued")
    screenshot(page, "lead-release-export-queued")

    assert execute_job(job_id=release.export_job_id) == "succeeded"
    expect(page.get_by_test_id("export-state")).to_have_text("written", timeout=10_000)
    expect(page.get_by_role("link", name="download the zip")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "lead-release-export-written")

    page.goto(f"{base}/")
    expect(page.get_by_test_id("lead-studies")).to_contain_text("passed")
    expect(page.get_by_test_id("lead-releases")).to_contain_text(f"Release {release.pk}")
    screenshot(page, "lead-home")
    page.goto(f"{base}/generation/batches/{study.batch_id}/")
    expect(page.get_by_test_id("batch-decision")).to_contain_text(
        f"released as release {release.pk}"
    )
    context.close()


def test_all_done_hides_the_last_image_and_no_score_looks_preselected(
    transactional_db, live_server, browser, screenshot, batch, raters
):
    study = open_study(batch, raters, sample_size=4, warmup_count=0, retest_share=0)
    total = Assignment.objects.filter(study=study, rater=raters[0]).count()
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, live_server.url, raters[0].username)
    page.get_by_role("link", name="Start rating").click()
    page.get_by_role("button", name="I have read the instructions").click()
    for position in range(1, total + 1):
        expect(page.get_by_test_id("rating-progress")).to_have_text(f"{position} / {total}")
        button = page.locator("button[data-score='5']")
        expect(button).to_be_enabled()
        # The score pressed for the previous image does not hold the focus on this one.
        assert page.evaluate("document.activeElement.dataset.score") is None
        if position == 2:
            screenshot(page, "rating-second-image-no-preselection")
        button.focus()  # as a keyboard user's Tab would, so the focus ring shows
        page.keyboard.press("Enter")
    expect(page.get_by_text("All done")).to_be_visible()
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator(".scale")).to_be_hidden()
    screenshot(page, "rating-all-done")
    context.close()
