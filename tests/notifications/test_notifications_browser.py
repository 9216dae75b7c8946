"""A dermatologist sees the study that waits for them at the top of their home page, in a
real browser, and marks it read (the form's POST with its CSRF token)."""

import pytest
from playwright.sync_api import expect

from tests.conftest import sign_in_page
from tests.review.conftest import open_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_dermatologist_sees_and_marks_read_the_study_that_waits_for_them(
    transactional_db, live_server, browser, screenshot, batch, raters
):
    study = open_study(batch, raters, sample_size=4, name="Spring study")
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    sign_in_page(page, live_server.url, raters[0].username)
    panel = page.get_by_test_id("notifications")
    expect(panel.get_by_test_id("notification")).to_have_count(1)
    expect(panel).to_contain_text(f"Spring study (study #{study.pk}) has")
    expect(panel).to_contain_text("1 new")
    screenshot(page, "notifications-dermatologist-home")
    panel.get_by_role("button", name="Mark read").click()
    expect(page.get_by_test_id("notifications")).not_to_contain_text("1 new")
    after = page.get_by_test_id("notifications")
    expect(after.get_by_role("button", name="Mark read")).to_have_count(0)
    context.close()
