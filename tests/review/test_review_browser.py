"""A study end to end in headless Chromium: three dermatologists rate every image with the
keyboard (one on a tablet, who taps the first rating, stops after two and comes back later),
then a lead closes the study, sees the gate pass and approves; the export downloads and
verifies against its manifest."""

import io
import zipfile

import pytest
from playwright.sync_api import expect

from jobs.runner import execute_job
from review.models import Assignment, Rating, Release
from review.services.export import release_folder, verify_release
from tests.conftest import sign_in_page
from tests.review.conftest import open_study

pytestmark = [pytest.mark.slow, pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 900}
TABLET = {"width": 820, "height": 1180}


def rate_next(page, position: int, total: int, key: str, *, tap: bool = False) -> None:
    """Wait for item `position` (1-based) to be shown and ready, then rate it with a key (or a
    tap on the button, as on a tablet without a keyboard)."""
    expect(page.get_by_test_id("rating-progress")).to_have_text(f"{position} / {total}")
    button = page.locator(f"button[data-score='{key}']")
    expect(button).to_be_enabled()
    # A dermatologist looks before scoring: the gate (criteria version 2) fails raters with
    # more than 20% of ratings under 1.5 s.
    page.wait_for_timeout(1600)
    if tap:
        button.tap()
    else:
        page.keyboard.press(key)


def test_three_raters_rate_with_the_keyboard_and_a_lead_releases(
    transactional_db, live_server, browser, screenshot, tmp_path, batch, raters, lead
):
    study = open_study(
        batch, raters, sample_size=6, control_ratio=0.34, warmup_count=0, retest_share=0
    )
    base = live_server.url
    total = Assignment.objects.filter(study=study, rater=raters[0]).count()
    assert total == study.plan["items_per_rater"] and study.plan["controls"] >= 1

    for number, rater in enumerate(raters):
        viewport = TABLET if number == 1 else DESKTOP
        context = browser.new_context(viewport=viewport, has_touch=number == 1)
        page = context.new_page()
        sign_in_page(page, base, rater.username)
        page.get_by_role("link", name="Start rating").click()
        page.get_by_role("button", name="I have read the instructions").click()
        key = "7" if number == 2 else "6"
        for position in range(1, total + 1):
            if number in (0, 1) and position == 1:
                expect(page.locator("button[data-score='1']")).to_be_enabled()
                assert page.eval_on_selector("#item", "i => i.naturalWidth") == 512
                screenshot(page, "review-rating-screen" + ("-tablet" if number else ""))
            if number == 1 and position == 3:
                # Leave after two ratings; the home page offers to continue where it stopped.
                expect(page.get_by_test_id("rating-progress")).to_have_text(f"3 / {total}")
                assert Rating.objects.filter(study=study, rater=rater).count() == 2
                page.goto(f"{base}/")
                expect(page.get_by_test_id("assignment")).to_contain_text(f"2 / {total} rated")
                page.get_by_role("link", name="Continue rating").click()
            rate_next(page, position, total, key, tap=number == 1 and position == 1)
        expect(page.get_by_text("All done")).to_be_visible()
        expect(page.get_by_test_id("rating-progress")).to_have_text(f"{total} / {total}")
        scores = set(
            Rating.objects.filter(study=study, rater=rater).values_list("score", flat=True)
        )
        assert scores == {int(key)}
        context.close()
    assert Rating.objects.filter(study=study).count() == 3 * total

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, base, lead.username)
    page.goto(f"{base}/review/studies/{study.pk}/")
    page.get_by_test_id("confirm-close").check()
    page.get_by_test_id("close-study").click()
    expect(page.get_by_test_id("gate").locator("h2")).to_have_text("Gate: passed")
    page.get_by_test_id("confirm-approve").check()
    page.get_by_test_id("approve").click()
    release = Release.objects.get(study=study)
    assert page.url == f"{base}/review/releases/{release.pk}/"
    expect(page.locator("h1")).to_have_text(f"Release {release.pk}")
    expect(page.get_by_test_id("manifest-sha")).to_have_text(release.manifest_sha256)
    screenshot(page, "review-release")

    assert execute_job(job_id=release.export_job_id) == "succeeded"
    page.reload()
    link = page.get_by_role("link", name="download the zip")
    expect(link).to_be_visible()
    response = page.request.get(base + link.get_attribute("href"))
    assert response.status == 200
    with zipfile.ZipFile(io.BytesIO(response.body())) as archive:
        archive.extractall(tmp_path)
    release.refresh_from_db()
    assert verify_release(tmp_path / f"release-{release.pk}", release.manifest) == []
    assert verify_release(release_folder(release), release.manifest) == []
    assert len(release.manifest["images"]) == release.image_count > 0
    context.close()
