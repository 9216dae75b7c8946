import csv
import io
import json
from html import unescape
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Dataset, Image
from tests.factories import make_user
from training.fairness_verdicts import CRITERIA
from training.models import Run
from training.selectors import classifier_images
from training.services import RunConfigError, run_create, run_mark_confidence_model

pytestmark = pytest.mark.django_db
QUICK = [
    "--set",
    "arch=resnet18",
    "--set",
    "image_size=32",
    "--set",
    "epochs=2",
    "--set",
    "bootstrap=30",
    "--set",
    "learning_rate=0.001",
    "--set",
    "batch_size=16",
]


@pytest.fixture
def datasets(capsys):
    call_command("seed_demo", "--per-class", "6", "--seed", "1")
    # Stand-in synthetic images (generation comes later): drawn lesions marked synthetic.
    call_command("seed_demo", "--per-class", "6", "--seed", "9", "--name", "synth")
    Dataset.objects.filter(name="synth").update(source_format="synthetic")
    Image.objects.filter(dataset__name="synth").update(origin="synthetic")
    capsys.readouterr()


def last_run(capsys) -> Run:
    return Run.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-2]))


@pytest.fixture
def runs(datasets, capsys):
    call_command(
        "train", "--kind", "classifier", "--dataset", "demo", "--wait", "--name", "baseline", *QUICK
    )
    baseline = last_run(capsys)
    call_command(
        "train",
        "--kind",
        "classifier",
        "--dataset",
        "demo",
        "--synthetic-dataset",
        "synth",
        "--wait",
        "--name",
        "fairskin",
        *QUICK,
    )
    return baseline, last_run(capsys)


def check_runs_store_their_fairness_evaluation(runs):
    baseline, fairskin = runs
    for run in runs:
        groups = run.evaluation["by_fst_group"]
        assert set(groups["auroc_by_group"]) <= {"I–II", "III–IV", "V–VI"}
        assert "ci" in groups and run.evaluation["weights_source"].startswith("random")

    def manifest(run):
        return json.loads(Path(run.folder, "manifest.json").read_text())

    # Per-image test predictions, keyed by catalogue image id, for paired comparisons.
    test_ids = {
        str(pk)
        for pk in Image.objects.filter(
            dataset__name="demo", split="test", fst_low__isnull=False
        ).values_list("pk", flat=True)
    }
    for run in runs:
        stored = json.loads(Path(run.folder, "test_predictions.json").read_text())
        assert set(stored["ids"]) == test_ids and len(stored["proba"]) == len(test_ids)
        assert run.evaluation["test_predictions"]["images"] == len(test_ids)
        groups = run.evaluation["by_fst_group"]
        assert set(groups["auroc_by_group_classes"]) <= set(groups["auroc_classes"] or [None])
    assert manifest(baseline)["synthetic_train_images"] == 0
    assert manifest(fairskin)["synthetic_train_images"] == 42
    synth_ids = classifier_images(selection=fairskin.selection, synthetic=True)
    assert manifest(baseline)["synthetic_image_ids"] == []
    assert sorted(map(int, manifest(fairskin)["synthetic_image_ids"])) == sorted(
        synth_ids.values_list("pk", flat=True)
    )
    assert fairskin.uses_synthetic and not baseline.uses_synthetic


def check_fairness_report_compares_runs_with_paired_verdicts_and_exports(client, runs):
    baseline, fairskin = runs
    client.force_login(make_user("lead"))
    query = {"baseline": baseline.pk, "runs": [fairskin.pk]}
    page = client.get(reverse("training:fairness"), query)
    html = unescape(page.content.decode())
    assert page.status_code == 200
    for name in CRITERIA.values():
        assert name in html
    row = page.context["comparison"]["runs"][0]
    assert row["refusal"] == "" and row["paired"]["replicates"] == 2000
    assert row["paired"]["images"] == baseline.evaluation["test_predictions"]["images"]
    for c in row["criteria"]:
        assert c["state"] in ("met", "not met", "not shown")
        assert "95 % paired interval" in c["text"] or "undefined" in c["text"]
        assert c["text"] in html
    assert "reduced by -" not in html
    exported = client.get(reverse("training:fairness_export"), {**query, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert [r["role"] for r in rows] == ["baseline", "candidate"]
    assert rows[0]["run_id"] == str(baseline.pk) and "auroc_V–VI" in rows[0]
    assert rows[1]["gap_verdict"] == row["criteria"][0]["state"] and rows[0]["gap_verdict"] == ""
    as_json = client.get(reverse("training:fairness_export"), {**query, "format": "json"})
    assert as_json.json()["rows"][1]["run_id"] == fairskin.pk
    assert "fairlearn" in as_json.json()["definitions"]["equalized_odds_difference"]


def check_runs_tested_on_different_images_are_refused_on_the_page(client, runs):
    baseline, fairskin = runs
    client.force_login(make_user("lead"))
    query = {"baseline": baseline.pk, "runs": [fairskin.pk]}
    # The candidate's evaluation covered two test images fewer than the baseline's.
    path = Path(fairskin.folder, "test_predictions.json")
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({k: v[:-2] if k != "classes" else v for k, v in stored.items()}))
    page = client.get(reverse("training:fairness"), query)
    html = unescape(page.content.decode())
    assert page.status_code == 200
    assert f"Run {fairskin.pk} cannot be compared with baseline run {baseline.pk}" in html
    assert "2 image(s) only in the baseline's" in html
    row = page.context["comparison"]["runs"][0]
    assert {c["state"] for c in row["criteria"]} == {"not shown"}
    # A run evaluated before per-image predictions were stored: not shown, with the reason.
    path.write_text(json.dumps(stored))
    evaluation = {k: v for k, v in fairskin.evaluation.items() if k != "test_predictions"}
    Run.objects.filter(pk=fairskin.pk).update(evaluation=evaluation)
    page = client.get(reverse("training:fairness"), query)
    assert page.status_code == 200
    assert f"run {fairskin.pk} stores no per-image test predictions" in page.content.decode()
    assert page.context["comparison"]["runs"][0]["refusal"] == ""


def check_only_a_finished_real_only_classifier_can_be_the_confidence_model(runs):
    baseline, fairskin = runs
    with pytest.raises(RunConfigError, match="baseline trained on real images only"):
        run_mark_confidence_model(run=fairskin)
    run_mark_confidence_model(run=baseline)
    run_mark_confidence_model(run=baseline)  # idempotent
    assert list(Run.objects.filter(is_confidence_model=True)) == [baseline]
    with pytest.raises(RunConfigError, match="not a classifier"):
        run_mark_confidence_model(run=Run.objects.create(kind="lora", base_model="tiny"))


# Training the two classifiers is most of this module's time, so each test below checks
# several behaviours of one pair of runs (each check on its own reads as a test).
def test_classifier_runs_store_their_evaluation_and_one_can_be_the_confidence_model(runs):
    check_runs_store_their_fairness_evaluation(runs)
    check_only_a_finished_real_only_classifier_can_be_the_confidence_model(runs)


def test_the_fairness_report_compares_runs_and_refuses_what_cannot_be_compared(client, runs):
    check_fairness_report_compares_runs_with_paired_verdicts_and_exports(client, runs)
    check_runs_tested_on_different_images_are_refused_on_the_page(client, runs)


@pytest.fixture
def small_demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()


def test_bad_classifier_runs_are_refused(small_demo):
    with pytest.raises(RunConfigError, match="epochs"):
        run_create(kind="classifier", selection={"datasets": ["demo"]}, config={"epochs": 0})
    Image.objects.filter(dataset__name="demo", split="test").update(split="val")
    with pytest.raises(RunConfigError, match="no held-out test images"):
        run_create(kind="classifier", selection={"datasets": ["demo"]})
    with pytest.raises(CommandError, match="use --set epochs"):
        call_command("train", "--kind", "classifier", "--dataset", "demo", "--steps", "3")
    assert Run.objects.count() == 0
