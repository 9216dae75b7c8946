"""The gate page in headless Chromium (issue 15): a failed gate with its reasons on top and no
approval offered, and a passed gate with approval; screenshots of both for a person to look at
(test-artifacts/screenshots/gate-failed.png, gate-passed.png)."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.conftest import sign_in_page
from tests.review.test_gate_page import closed_study

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning"),
]

DESKTOP = {"width": 1280, "height": 900}


def open_gate(browser, base, lead, study):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, base, lead.username)
    page.goto(base + reverse("review:study", args=[study.pk]))
    expect(page.get_by_test_id("gate")).to_be_visible()
    return context, page


@pytest.mark.parametrize(
    "name, scores, seconds",
    [("gate-failed", (5, 6, 3), (0.05, 4.0, 4.0)), ("gate-passed", (6, 6, 7), (3.0, 3.0, 3.0))],
)
def test_the_gate_page_reads_for_a_lead(
    transactional_db, live_server, browser, screenshot, batch, raters, lead, name, scores, seconds
):
    study = closed_study(batch, raters, lead, scores=scores, seconds=seconds)
    context, page = open_gate(browser, live_server.url, lead, study)
    if name == "gate-failed":
        expect(page.get_by_test_id("failing-reason")).to_have_count(2)
        expect(page.get_by_test_id("approve")).to_have_count(0)
        expect(page.get_by_test_id("approval-refused")).to_be_visible()
        expect(page.get_by_test_id("flagged-raters")).to_contain_text("derm-1")
    else:
        expect(page.get_by_test_id("gate-passed")).to_be_visible()
        expect(page.get_by_test_id("approve")).to_be_visible()
        # A small study passes on its point estimates: the caveats say so under the verdict.
        expect(page.get_by_test_id("caveat").first).to_be_visible()
        expect(page.get_by_test_id("gate-caveats")).to_contain_text("cannot detect a leak")
    expect(page.get_by_test_id("histogram")).to_have_count(4)
    expect(page.get_by_test_id("table-raters")).to_contain_text("derm-3")
    screenshot(page, name)
    context.close()
