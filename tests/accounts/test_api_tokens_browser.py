"""An engineer makes an API token on their account page in a real browser, sees it once, uses
it, and revokes it."""

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import sign_in_page
from tests.factories import make_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_an_engineer_makes_uses_and_revokes_a_token(
    transactional_db, live_server, browser, screenshot
):
    engineer = make_user("engineer")
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    sign_in_page(page, live_server.url, engineer.username)
    page.get_by_role("link", name=engineer.username).click()
    tokens = page.get_by_test_id("api-tokens")
    tokens.get_by_label("Name").fill("nightly retraining")
    tokens.get_by_label("Expires after").select_option("90")
    tokens.get_by_role("button", name="Create token").click()
    value = page.get_by_test_id("new-token-value").inner_text()
    assert value.startswith("fsk_")
    expect(page.get_by_test_id("token-row")).to_contain_text("nightly retraining")
    screenshot(page, "api-token-created")

    api = f"{live_server.url}/api/studies/"
    assert requests.get(api, headers={"Authorization": f"Bearer {value}"}, timeout=30).ok
    page.goto(f"{live_server.url}/accounts/")
    expect(page.get_by_test_id("new-token")).to_have_count(0)  # shown once
    row = page.get_by_test_id("token-row")
    expect(row).not_to_contain_text("never")  # its use is recorded
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_test_id("token-row")).to_contain_text("revoked")
    screenshot(page, "api-token-revoked")
    refused = requests.get(api, headers={"Authorization": f"Bearer {value}"}, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "the API token 'nightly retraining' was revoked"
    context.close()
