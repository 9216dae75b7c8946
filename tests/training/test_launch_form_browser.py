"""Issue 16 in headless Chromium: the launch form's Kind swaps the settings box to that kind's
defaults (edits kept per kind), so a launch switched from textual inversion to classifier is
queued; a finished textual-inversion run's page leads on to a LoRA launch with the parent
preselected, and shows its loss chart with labelled axes."""

import json

import pytest
from django.core.management import call_command

from tests.conftest import sign_in_page
from tests.factories import make_user
from training.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def settings_box(page) -> dict:
    return json.loads(page.input_value("textarea[name=config]"))


def test_switching_kind_swaps_the_settings_and_a_classifier_launches(
    transactional_db, live_server, browser, screenshot, capsys
):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()
    make_user("engineer", username="eng-launch")
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    sign_in_page(page, live_server.url, "eng-launch")
    page.goto(f"{live_server.url}/admin/training/run/launch/")
    assert page.input_value("select[name=kind]") == "textual_inversion"
    ti = settings_box(page)
    assert ti["steps"] == 2000 and "lora_rank" in ti

    # An edit to the textual-inversion settings...
    page.fill("textarea[name=config]", json.dumps({**ti, "steps": 8}, indent=2))
    page.select_option("select[name=kind]", "classifier")
    classifier = settings_box(page)
    assert classifier["arch"] == "resnet50" and "lora_rank" not in classifier
    note = page.inner_text("[data-testid=kind-note]")
    assert "Classifier defaults" in note and "edits for Textual inversion are kept" in note
    # ...comes back with its kind; the classifier gets its defaults again.
    page.select_option("select[name=kind]", "textual_inversion")
    assert settings_box(page)["steps"] == 8
    page.select_option("select[name=kind]", "lora")
    assert settings_box(page)["lr_scheduler"] == "cosine_with_restarts"
    page.select_option("select[name=kind]", "classifier")
    assert settings_box(page) == classifier

    page.fill(
        "textarea[name=config]",
        json.dumps({**classifier, "arch": "resnet18", "image_size": 32, "epochs": 1}, indent=2),
    )
    page.select_option("select[name=datasets]", "demo")
    page.select_option("select[name=split]", "any")
    screenshot(page, "training-launch-switched-to-classifier")
    page.click("input[type=submit][value='Launch run']")
    page.wait_for_url("**/training/runs/*/")
    run = Run.objects.get()
    assert run.kind == "classifier" and run.config["arch"] == "resnet18"
    assert run.config["epochs"] == 1 and "lora_rank" not in run.config
    assert page.inner_text("h1").startswith(f"Run {run.pk} · Classifier")
    context.close()


def test_a_finished_textual_inversion_run_leads_on_to_a_lora_launch(
    transactional_db, live_server, browser, screenshot, capsys
):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    call_command(
        "train",
        "--kind",
        "textual_inversion",
        "--base-model",
        "tiny",
        "--dataset",
        "demo",
        "--steps",
        "24",
        "--wait",
        "--set",
        "validation_every=1000",
        "--set",
        "validation_inference_steps=1",
        "--set",
        "grad_accumulation=1",
        "--set",
        "lr_warmup_steps=0",
    )
    capsys.readouterr()
    ti = Run.objects.get()
    make_user("engineer", username="eng-next")
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    sign_in_page(page, live_server.url, "eng-next")
    page.goto(f"{live_server.url}/training/runs/{ti.pk}/")
    chart = page.locator("[data-testid=loss-chart]")
    assert chart.locator(".axis-title").all_text_contents() == ["training step", "loss"]
    x_ticks = chart.locator("text.tick[text-anchor=middle]").all_text_contents()
    assert x_ticks[0] == "0" and x_ticks[-1] == "25"
    box = chart.bounding_box()
    assert box["width"] > 400  # drawn at a readable size, not squeezed
    assert page.locator("[data-testid=artifacts] a").count() >= 4
    screenshot(page, "training-ti-run-next-step")

    page.click("text=Launch a LoRA run on this")
    page.wait_for_url("**/admin/training/run/launch/?kind=lora&parent=*")
    assert page.input_value("select[name=kind]") == "lora"
    assert page.input_value("select[name=parent]") == str(ti.pk)
    assert page.eval_on_selector(
        "select[name=datasets]", "s => Array.from(s.selectedOptions).map(o => o.value)"
    ) == ["demo"]
    assert settings_box(page)["lr_scheduler"] == "cosine_with_restarts"
    context.close()
