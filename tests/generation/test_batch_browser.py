"""The batch page in headless Chromium: an engineer follows a finished batch, filters the
gallery; a dermatologist is turned away."""

import pytest
from django.core.management import call_command

from generation.models import Batch, Sample, Verdict
from tests.conftest import sign_in_page
from tests.factories import make_user

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_engineer_reads_a_batch_and_filters_its_gallery(
    transactional_db, live_server, browser, screenshot, capsys, lora_run
):
    call_command(
        "generate",
        "--model",
        str(lora_run.pk),
        "--count",
        "6",
        "--diagnosis",
        "MEL",
        "--diagnosis",
        "NV",
        "--fst-distribution",
        "5=0.5,6=0.5",
        "--steps",
        "2",
        "--overgeneration",
        "2",
        "--set",
        "brightness_low=0.3",
        "--wait",
    )
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    make_user("engineer", username="eng-browser")
    make_user("dermatologist", username="derm-browser")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in_page(page, live_server.url, "eng-browser")
    page.click("text=Generation")
    page.click(f"a[href='/generation/batches/{batch.pk}/']")
    page.wait_for_selector("[data-testid=strata]")
    assert page.inner_text("[data-testid=batch-state]") == "Finished"
    rows = page.locator("[data-testid=strata] tbody tr")
    assert rows.count() == len(batch.quotas)
    assert "random weights: uncalibrated" in page.inner_text("[data-testid=provenance]")
    assert "not measurable" in page.inner_text("[data-testid=criteria]")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # thumbnails load lazily
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.gallery img')).every(i => i.complete)"
    )
    loaded = page.eval_on_selector_all(".gallery img", "imgs => imgs.map(i => i.naturalWidth)")
    assert loaded and all(width > 0 for width in loaded)
    screenshot(page, "generation-batch-page")

    page.select_option("select[name=verdict]", "accepted")
    page.click("form.filter-form button")
    page.wait_for_selector("[data-testid=gallery-count]")
    accepted = Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED).count()
    assert page.inner_text("[data-testid=gallery-count]").startswith(f"{accepted} sample")
    page.click(".gallery a >> nth=0")
    assert page.inner_text("[data-testid=verdict]") == "Accepted"
    screenshot(page, "generation-sample-page")
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in_page(page, live_server.url, "derm-browser")
    assert "Generation" not in page.inner_text("header")
    response = page.goto(f"{live_server.url}/generation/batches/{batch.pk}/")
    assert response.status == 403
    context.close()
