"""The whole journey in headless Chromium, on PostgreSQL with a real Celery worker on Redis.

An engineer imports the demo dataset through the admin (metadata CSV + image zip), has it
preprocessed and split, trains textual inversion, then LoRA, then a baseline classifier, and
launches a generation batch whose page they watch until it finishes. A lead opens two review
studies on the batch. Three dermatologists rate both with the keyboard: one study highly, the
other poorly. The lead closes the poorly rated study and finds approval refused, closes the
other, reads the passed gate and approves. The export job writes the release, the engineer
downloads it and trains a classifier on the real images plus the released ones, and the
fairness report compares that run with the baseline.

Every step is done through pages a user would click; the only direct database reads are the
assertions. Screenshots of each step go to test-artifacts/screenshots/journey-*.png (the README's
user guide shows them). Sizes are tiny so the walk fits in CI: the tiny diffusion model, a few
training steps, a ResNet-18 at 32 px.
"""

import io
import json
import re
import zipfile

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from catalog.models import Dataset, Image
from generation.models import Batch, Sample
from review.models import Rating, Release, Study
from review.services.export import verify_release
from tests.conftest import sign_in_page
from tests.factories import make_user
from training.models import Run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 900}
DIFFUSION_QUICK = {
    "steps": 4,
    "checkpoint_every": 2,
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
    "batch_size": 2,
}
CLASSIFIER_QUICK = {
    "arch": "resnet18",
    "image_size": 32,
    "epochs": 2,
    "bootstrap": 30,
    "learning_rate": 0.001,
    "batch_size": 16,
}
SLOW = 240_000  # ms: a job on the 2-core CI machine, worker start-up included


def sign_in(browser, base: str, username: str):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, base, username)
    expect(page.locator("header")).to_contain_text(username)
    return context, page


def edit_json(page, selector: str, changes: dict) -> None:
    """Change some values of a prefilled JSON settings box, as a user editing it would."""
    settings = json.loads(page.input_value(selector))
    settings.update(changes)
    page.fill(selector, json.dumps(settings, indent=2))


def wait_for_job_page(page, testid: str, what: str) -> None:
    state = page.get_by_test_id(testid)
    expect(state).not_to_have_text(re.compile("Queued|Running"), timeout=SLOW)
    assert state.inner_text() == "Succeeded", f"{what}: {state.inner_text()}\n" + page.inner_text(
        "main"
    )


def launch_run(
    page,
    base: str,
    kind: str,
    *,
    name: str,
    datasets: list[str],
    changes: dict,
    parent: Run | None = None,
    diagnoses=(),
    synthetic: list[str] = (),
) -> Run:
    page.goto(f"{base}/admin/training/run/add/")  # the admin's "Add" goes to the launch form
    page.click(f"a[href='?kind={kind}']")
    expect(page.locator("select[name=kind]")).to_have_value(kind)
    page.fill("input[name=name]", name)
    if parent is not None:
        page.select_option("select[name=parent]", str(parent.pk))
    page.select_option("select[name=datasets]", datasets)
    if diagnoses:
        page.select_option("select[name=diagnoses]", list(diagnoses))
    if synthetic:
        page.select_option("select[name=synthetic_datasets]", list(synthetic))
    page.select_option("select[name=split]", "train")
    edit_json(page, "textarea[name=config]", changes)
    page.click("input[type=submit][value='Launch run']")
    expect(page.locator(".messages, .messagelist")).to_contain_text("queued on the gpu queue")
    run = Run.objects.get(pk=int(re.search(r"/runs/(\d+)/", page.url).group(1)))
    wait_for_job_page(page, "run-state", f"{kind} run {run.pk}")
    run.refresh_from_db()
    return run


def rate_study(browser, base: str, rater, study: Study, key: str, screenshot=None) -> None:
    context, page = sign_in(browser, base, rater.username)
    row = page.get_by_test_id("assignment").filter(has_text=f"#{study.pk}")
    row.get_by_role("link", name="Start rating").click()
    page.get_by_role("button", name="I have read the instructions").click()
    total = int(page.get_by_test_id("rating-progress").inner_text().split("/")[1])
    for position in range(1, total + 1):
        expect(page.get_by_test_id("rating-progress")).to_have_text(f"{position} / {total}")
        expect(page.locator(f"button[data-score='{key}']")).to_be_enabled()
        if screenshot and position == 1:
            screenshot(page, "journey-07-rating-screen")
        # A dermatologist looks before scoring: the gate (criteria version 2) fails raters
        # with more than 20% of ratings under 1.5 s.
        page.wait_for_timeout(1600)
        page.keyboard.press(key)
    expect(page.get_by_text("All done")).to_be_visible()
    assert set(Rating.objects.filter(study=study, rater=rater).values_list("score", flat=True)) == {
        int(key)
    }
    context.close()


def open_study(page, base: str, batch: Batch, raters, name: str) -> Study:
    page.goto(f"{base}/review/")
    page.get_by_role("link", name="Open a study").click()
    page.select_option("select[name=batch]", str(batch.pk))
    page.fill("input[name=name]", name)
    for rater in raters:
        page.get_by_label(rater.username, exact=True).check()
    page.fill("input[name=sample_size]", "4")
    page.fill("input[name=control_ratio]", "0.25")
    page.fill("input[name=seed]", "11")
    page.fill("input[name=warmup_count]", "0")
    page.fill("input[name=retest_share]", "0")
    page.get_by_role("button", name="Create study").click()
    study = Study.objects.get(pk=int(re.search(r"/studies/(\d+)/", page.url).group(1)))
    for _ in range(240):  # the preparation job samples and blinds on the cpu worker
        if page.get_by_test_id("study-state").inner_text() == "Open for rating":
            return study
        page.wait_for_timeout(1000)
        page.reload()
    raise AssertionError(f"study {study.pk} never opened: {page.inner_text('main')}")


def test_the_whole_journey(
    transactional_db, live_server, start_worker, browser, screenshot, tmp_path
):
    base = live_server.url
    worker = start_worker(queues="gpu,cpu")
    engineer = make_user("engineer", username="eng")
    lead = make_user("lead", username="lead")
    raters = [make_user("dermatologist", username=f"derm{i}") for i in (1, 2, 3)]
    # The files a user gets from `manage.py seed_demo --export DIR` (README).
    call_command("seed_demo", "--export", str(tmp_path), "--per-class", "6", "--seed", "4")
    metadata, archive = tmp_path / "demo.csv", tmp_path / "demo-images.zip"

    # -- Engineer: import, preprocess, split -------------------------------------------------
    context, page = sign_in(browser, base, engineer.username)
    screenshot(page, "journey-00-engineer-home")
    page.get_by_role("link", name="Admin").first.click()
    page.get_by_role("link", name="Datasets").first.click()
    page.get_by_role("link", name="Import a dataset").click()
    page.select_option("select[name=format]", "csv")
    page.fill("input[name=name]", "demo")
    page.fill("input[name=licence]", "Procedural images drawn by FairSkin; no restrictions")
    page.set_input_files("input[name=metadata]", str(metadata))
    page.set_input_files("input[name=images]", str(archive))
    screenshot(page, "journey-01-import-form")
    page.click("input[type=submit]")
    wait_for_job_page(page, "job-state", "the import")
    demo = Dataset.objects.get(name="demo")
    assert demo.images.count() == 42

    page.goto(f"{base}/admin/catalog/dataset/")
    page.check(f"input[name=_selected_action][value='{demo.pk}']")
    page.select_option("select[name=action]", "preprocess")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("preprocessing queued as job")
    message = page.locator(".messagelist").inner_text()
    job_id = re.search(r"job (\d+)", message).group(1)
    page.goto(f"{base}/jobs/{job_id}/")
    wait_for_job_page(page, "job-state", "preprocessing")

    page.goto(f"{base}/admin/catalog/dataset/")
    page.check(f"input[name=_selected_action][value='{demo.pk}']")
    page.select_option("select[name=action]", "split")
    page.click("button[name=index]")
    page.fill("input[name=seed]", "0")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("train 30")
    splits = set(Image.objects.filter(dataset=demo).values_list("split", flat=True))
    assert splits == {"train", "val", "test"}
    page.goto(f"{base}/catalog/datasets/demo/")
    expect(page.get_by_test_id("image-count")).to_contain_text("42")
    screenshot(page, "journey-02-dataset")

    # -- Engineer: textual inversion, LoRA, baseline classifier ------------------------------
    ti = launch_run(
        page,
        base,
        "textual_inversion",
        name="demo TI",
        datasets=["demo"],
        diagnoses=["MEL", "NV"],
        changes=DIFFUSION_QUICK,
    )
    lora = launch_run(
        page,
        base,
        "lora",
        name="demo LoRA",
        datasets=["demo"],
        parent=ti,
        diagnoses=["MEL", "NV"],
        changes=DIFFUSION_QUICK,
    )
    expect(page.locator("main")).to_contain_text(f"Textual inversion {ti.pk}")
    screenshot(page, "journey-03-lora-run")
    baseline = launch_run(
        page, base, "classifier", name="baseline", datasets=["demo"], changes=CLASSIFIER_QUICK
    )
    assert baseline.evaluation and not baseline.uses_synthetic

    # -- Engineer: a generation batch, watched until it finishes -----------------------------
    page.goto(f"{base}/admin/generation/batch/add/")
    page.select_option("select[name=model_run]", str(lora.pk))
    page.fill("input[name=target]", "8")
    page.select_option("select[name=diagnoses]", ["MEL", "NV"])
    for fst in range(1, 7):
        page.fill(f"input[name=fst_{fst}]", "0.5" if fst >= 5 else "0")
    page.fill("input[name=steps]", "2")
    page.fill("input[name=overgeneration]", "2")
    page.fill("input[name=shard_size]", "4")
    page.fill("input[name=device_batch]", "4")
    page.click("input[type=submit][value='Launch batch']")
    batch = Batch.objects.get(pk=int(re.search(r"/batches/(\d+)/", page.url).group(1)))
    expect(page.get_by_test_id("strata")).to_be_visible()
    state = page.get_by_test_id("batch-state")
    expect(state).to_have_text("Finished", timeout=SLOW)  # the htmx fragment updates itself
    accepted = Sample.objects.filter(batch=batch, verdict="accepted").count()
    assert accepted == 8, page.inner_text("main")
    # Once finished, the page reloads itself with the report and the gallery.
    expect(page.get_by_test_id("gallery-count")).to_contain_text("8 samples")
    expect(page.get_by_test_id("fid-table")).to_be_visible()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # thumbnails load lazily
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.gallery img'))"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    screenshot(page, "journey-04-batch-finished")
    context.close()

    # -- Lead: two studies on the batch -------------------------------------------------------
    context, page = sign_in(browser, base, lead.username)
    good = open_study(page, base, batch, raters, "Realism study")
    poor = open_study(page, base, batch, raters, "Second opinion")
    screenshot(page, "journey-05-study-open")
    context.close()

    # -- Dermatologists: both studies, by keyboard --------------------------------------------
    context, page = sign_in(browser, base, raters[0].username)
    expect(page.get_by_test_id("assignment")).to_have_count(2)
    screenshot(page, "journey-06-dermatologist-home")
    context.close()
    for number, rater in enumerate(raters):
        rate_study(browser, base, rater, good, "7", screenshot if number == 0 else None)
        rate_study(browser, base, rater, poor, "2")
    per_rater = good.assignments.filter(rater=raters[0]).count()
    assert Rating.objects.filter(study=good).count() == 3 * per_rater
    assert Rating.objects.filter(study=poor).count() == 3 * per_rater

    # -- Lead: the poor study cannot release the batch; the good one does ---------------------
    context, page = sign_in(browser, base, lead.username)
    page.goto(f"{base}/review/studies/{poor.pk}/")
    page.get_by_test_id("confirm-close").check()
    page.get_by_test_id("close-study").click()
    expect(page.get_by_test_id("gate").locator("h2")).to_have_text("Gate: not passed")
    expect(page.get_by_test_id("approval-refused")).to_contain_text("Approval is refused")
    expect(page.get_by_test_id("approve")).to_have_count(0)
    # A hand-made approval (the form the page no longer shows) is refused by the service.
    page.evaluate(
        """(url) => {
        const form = document.createElement('form');
        form.method = 'post'; form.action = url;
        const token = document.querySelector('input[name=csrfmiddlewaretoken]').cloneNode();
        const confirm = Object.assign(document.createElement('input'),
            {type: 'hidden', name: 'confirm', value: 'yes'});
        form.append(token, confirm); document.body.appendChild(form); form.submit();
    }""",
        f"/review/studies/{poor.pk}/approve/",
    )
    expect(page.locator(".messages")).to_contain_text("gate did not pass")
    screenshot(page, "journey-08-approval-refused")
    assert not Release.objects.exists()

    page.goto(f"{base}/review/studies/{good.pk}/")
    page.get_by_test_id("confirm-close").check()
    page.get_by_test_id("close-study").click()
    expect(page.get_by_test_id("gate").locator("h2")).to_have_text("Gate: passed")
    screenshot(page, "journey-09-gate-passed")
    page.fill("input[name=note]", "Passed the realism gate")
    page.get_by_test_id("confirm-approve").check()
    page.get_by_test_id("approve").click()
    release = Release.objects.get(study=good)
    expect(page.locator("h1")).to_have_text(f"Release {release.pk}")
    context.close()

    # -- Engineer: the export, then a classifier on real + released images --------------------
    context, page = sign_in(browser, base, engineer.username)
    page.goto(f"{base}/review/releases/{release.pk}/")
    link = page.get_by_role("link", name="download the zip")
    for _ in range(120):  # the export job runs on the cpu worker
        if link.count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    screenshot(page, "journey-10-release")
    response = page.request.get(base + link.get_attribute("href"))
    assert response.status == 200
    with zipfile.ZipFile(io.BytesIO(response.body())) as exported:
        exported.extractall(tmp_path / "download")
    release.refresh_from_db()
    assert verify_release(tmp_path / "download" / f"release-{release.pk}", release.manifest) == []
    assert release.image_count == accepted

    fairer = launch_run(
        page,
        base,
        "classifier",
        name="real + release",
        datasets=["demo"],
        synthetic=[batch.dataset.name],
        changes=CLASSIFIER_QUICK,
    )
    assert fairer.uses_synthetic
    manifest = json.loads(
        (tmp_path / "download" / f"release-{release.pk}" / "manifest.json").read_text()
    )
    assert len(manifest["images"]) == accepted

    page.get_by_role("link", name="Training").first.click()
    page.get_by_role("link", name="Fairness report").first.click()
    page.select_option("select[name=baseline]", str(baseline.pk))
    page.select_option("select[name=runs]", [str(fairer.pk)])
    page.locator("form.filter-form button").click()
    table = page.get_by_test_id("fairness-table")
    expect(table).to_contain_text(f"{baseline.pk} (baseline)")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id(f"criteria-{fairer.pk}")).to_contain_text("AUROC gap")
    screenshot(page, "journey-11-fairness-report")
    context.close()
    assert "Traceback" not in worker.output()
