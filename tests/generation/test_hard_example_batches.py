"""Hard-example batches: a classifier run's validation errors plan a batch, shown before launch.

One test trains a real classifier on the demo data (QUICK settings) and walks the page; the
others use a finished classifier run whose stored validation predictions are written here, so
the expected error table is known exactly.
"""

import json
from html import unescape
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Image
from generation.models import Batch
from generation.services import BatchConfigError, batch_create
from jobs.models import Job, JobState
from tests.factories import make_user
from training.models import Run, RunKind

pytestmark = pytest.mark.django_db
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
QUICK = [
    *("--set", "arch=resnet18", "--set", "image_size=32", "--set", "epochs=1"),
    *("--set", "bootstrap=10", "--set", "batch_size=16"),
]


def finished_run(kind, folder: Path, **fields) -> Run:
    folder.mkdir(parents=True, exist_ok=True)
    job = Job.objects.create(kind="training.run", queue="gpu", state=JobState.SUCCEEDED)
    return Run.objects.create(
        kind=kind, base_model="tiny", job=job, artifacts_dir=str(folder), **fields
    )


@pytest.fixture
def lora(tmp_path) -> Run:
    """A finished LoRA run of MEL and NV (batch creation only checks its folder exists)."""
    ti = finished_run(RunKind.TEXTUAL_INVERSION, tmp_path / "ti")
    selection = {"datasets": ["demo"], "diagnoses": ["MEL", "NV"], "split": "any"}
    lora = finished_run(RunKind.LORA, tmp_path / "lora", selection=selection)
    lora.parent = ti
    lora.save(update_fields=["parent"])
    return lora


def predictions(cells: dict[tuple[str, int], tuple[int, int]]) -> dict:
    """Stored validation predictions with ``n`` images and ``errors`` wrong per stratum."""
    out: dict = {"classes": CLASSES, "ids": [], "labels": [], "fst": [], "proba": []}
    for (dx, fst), (n, errors) in cells.items():
        for k in range(n):
            label = CLASSES.index(dx)
            guess = (label + 1) % len(CLASSES) if k < errors else label
            out["ids"].append(str(len(out["ids"])))
            out["labels"].append(label)
            out["fst"].append(fst)
            out["proba"].append([0.9 if c == guess else 0.1 / 6 for c in range(len(CLASSES))])
    return out


CELLS = {("MEL", 6): (9, 7), ("MEL", 2): (10, 1), ("NV", 3): (8, 0), ("NV", 5): (6, 3)}


@pytest.fixture
def classifier(tmp_path) -> Run:
    run = finished_run(
        RunKind.CLASSIFIER, tmp_path / "clf", selection={"datasets": ["demo"], "split": "train"}
    )
    Path(run.folder, "val_predictions.json").write_text(json.dumps(predictions(CELLS)))
    return run


def plan_url(run, **query):
    return reverse("generation:hard_examples", args=[run.pk]), query


def test_a_real_classifier_run_plans_hard_examples_shown_before_launch(client, capsys, lora):
    call_command("seed_demo", "--per-class", "8", "--seed", "1")
    call_command("train", "--kind", "classifier", "--dataset", "demo", "--wait", *QUICK)
    run = Run.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-2]))
    stored = json.loads(Path(run.folder, "val_predictions.json").read_text())
    val = Image.objects.filter(dataset__name="demo", split="val", fst_low__isnull=False)
    assert set(stored["ids"]) == {str(pk) for pk in val.values_list("pk", flat=True)}
    assert run.evaluation["val_predictions"]["images"] == val.count() > 0

    # The error table the page must show, counted here from the stored predictions.
    expected: dict[str, list[int]] = {}
    for label, fst, row in zip(stored["labels"], stored["fst"], stored["proba"], strict=True):
        dx = CLASSES[label]
        if dx in ("MEL", "NV"):
            cell = expected.setdefault(f"{dx}:{fst}", [0, 0])
            cell[0] += 1
            cell[1] += int(row.index(max(row)) != label)
    assert expected, "the demo validation split holds MEL and NV images"

    engineer = make_user("engineer")
    client.force_login(engineer)
    run_page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    url = reverse("generation:hard_examples", args=[run.pk])
    assert url in run_page and "Generate hard examples" in run_page
    fairness = unescape(client.get(reverse("training:fairness")).content.decode())
    assert url in fairness and "is an ordinary classifier run" in fairness

    page = client.get(url, {"target": 24, "min_images": 1, "cap_share": 1})
    assert page.status_code == 200
    plan = page.context["plan"]
    assert page.context["form"]["model_run"].value() == str(lora.pk)  # the default model
    html = unescape(page.content.decode())
    assert sum(plan.quotas().values()) == 24
    for row in plan.rows:
        n, errors = expected.get(row.stratum.key, [0, 0])
        assert (row.stratum.n, row.stratum.errors) == (n, errors)
        assert row.reason in html
        if n:
            assert f"{errors} of {n} validation image" in row.reason
    assert not Batch.objects.exists()  # shown, not launched

    quotas = page.context["quotas_json"]
    launched = client.post(
        url,
        {"model_run": lora.pk, "target": 24, "floor": 1, "cap_share": 1, "min_images": 1}
        | {"name": "hard", "quotas": quotas, "action": "launch"},
    )
    batch = Batch.objects.get()
    assert launched.status_code == 302 and launched["Location"].endswith(f"/batches/{batch.pk}/")
    assert batch.quotas == json.loads(quotas) and batch.target == 24
    assert batch.origin["kind"] == "hard_example" and batch.origin["classifier_run"] == run.pk
    assert batch.origin["split"] == "val"
    batch_page = unescape(client.get(launched["Location"]).content.decode())
    assert "Hard examples for classifier run" in batch_page
    assert f'{reverse("training:run", args=[run.pk])}">{run.pk}</a></h2>' in batch_page
    for row in plan.rows:
        assert row.reason in batch_page


def launch_form(lora, quotas, **change):
    data = {"model_run": lora.pk, "target": 20, "floor": 1, "cap_share": 0.5, "min_images": 5}
    return data | {"quotas": json.dumps(quotas), "action": "launch"} | change


def test_the_plan_follows_the_stored_errors_and_a_tampered_launch_is_refused(
    client, classifier, lora
):
    client.force_login(make_user("engineer"))
    url = reverse("generation:hard_examples", args=[classifier.pk])
    page = client.get(url, {"target": 20, "cap_share": 0.5, "model_run": lora.pk})
    plan = page.context["plan"]
    html = unescape(page.content.decode())
    shown = plan.quotas()
    # 12 strata (MEL, NV x I-VI) at the floor of 1; the other 8 by (errors+1)/(n+2) over the
    # four judged strata: MEL VI 8/11, NV V 4/8, MEL II 2/12, NV III 1/10.
    assert shown == {
        **{f"{dx}:{f}": 1 for dx in ("MEL", "NV") for f in range(1, 7)},
        "MEL:6": 5,
        "NV:5": 4,
        "MEL:2": 2,
        "NV:3": 1,
    }
    assert (
        "MEL × FST VI: 7 of 9 validation images misclassified (78 %, Laplace 73 %) → quota 5"
        in html
    )
    assert "MEL × FST I: no validation image; too few images to judge" in html

    tampered = {**shown, "MEL:6": 4, "NV:1": 2}
    for forged in (tampered, {}, {"MEL:6": 20}):
        refused = client.post(url, launch_form(lora, forged))
        assert refused.status_code == 400
        assert "the quotas sent are not the plan" in unescape(refused.content.decode())
    no_quotas = launch_form(lora, shown)
    del no_quotas["quotas"]
    assert client.post(url, no_quotas).status_code == 400
    # Other settings than the ones shown give another plan: refused too.
    assert client.post(url, launch_form(lora, shown, target=21)).status_code == 400
    assert not Batch.objects.exists()

    replan = client.post(url, launch_form(lora, shown, action="plan", target=30))
    assert replan.status_code == 200 and sum(replan.context["plan"].quotas().values()) == 30
    assert not Batch.objects.exists()
    ok = client.post(url, launch_form(lora, shown))
    assert ok.status_code == 302 and Batch.objects.get().quotas == shown


def test_only_those_who_launch_batches_see_the_plan_and_launch(client, classifier, lora):
    url = reverse("generation:hard_examples", args=[classifier.pk])
    run_url = reverse("training:run", args=[classifier.pk])
    for role in ("lead", "dermatologist"):
        client.force_login(make_user(role))
        assert client.get(url).status_code == 403
        assert client.post(url, launch_form(lora, {})).status_code == 403
        assert url not in client.get(run_url).content.decode()
    assert not Batch.objects.exists()
    client.force_login(make_user("engineer"))
    assert url in client.get(run_url).content.decode()


def test_runs_that_cannot_plan_hard_examples_are_refused_with_the_reason(
    client, classifier, lora, tmp_path
):
    client.force_login(make_user("engineer"))

    def refusal(run, **query):
        page = client.get(reverse("generation:hard_examples", args=[run.pk]), query)
        assert page.status_code == 200 and page.context["plan"] is None
        return unescape(page.content.decode())

    assert "is a LoRA run" in refusal(lora, model_run=lora.pk)
    no_file = finished_run(RunKind.CLASSIFIER, tmp_path / "old", selection={"split": "train"})
    assert "stored no validation predictions" in refusal(no_file, model_run=lora.pk)
    any_split = finished_run(RunKind.CLASSIFIER, tmp_path / "any", selection={"split": "any"})
    assert "not out-of-sample" in refusal(any_split, model_run=lora.pk)
    assert "cannot give 12 strata" in refusal(classifier, model_run=lora.pk, target=11)
    Job.objects.filter(pk=classifier.job_id).update(state=JobState.RUNNING)
    assert "has not finished" in refusal(classifier, model_run=lora.pk)


def test_explicit_quotas_make_an_ordinary_batch_and_bad_ones_are_refused(lora):
    batch = batch_create(model_run=lora, target=5, quotas={"MEL:6": 3, "NV:2": 2, "NV:1": 0})
    assert batch.quotas == {"MEL:6": 3, "NV:2": 2} and batch.diagnoses == ["MEL", "NV"]
    assert batch.origin == {}
    for quotas, message in [
        ({"MEL:6": 3}, "add up to 3, not the target of 5"),
        ({"MEL:7": 5}, "skin types are 1-6"),
        ({"FOO:1": 5}, "FOO is not a diagnosis"),
    ]:
        with pytest.raises(BatchConfigError, match=message):
            batch_create(model_run=lora, target=5, quotas=quotas)
    with pytest.raises(BatchConfigError, match="without diagnoses"):
        batch_create(model_run=lora, target=5, quotas={"MEL:6": 5}, diagnoses=["MEL"])
    assert Batch.objects.count() == 1


def test_the_generate_command_prints_the_plan_and_launches_it(capsys, classifier, lora):
    args = ["generate", "--model", str(lora.pk), "--count", "20", "--cap-share", "0.5"]
    call_command(*args, "--hard-examples-from", str(classifier.pk), "--dry-run")
    out = capsys.readouterr().out
    assert f"hard examples from classifier run {classifier.pk}: 20 images over 12 strata" in out
    assert (
        "MEL × FST VI: 7 of 9 validation images misclassified (78 %, Laplace 73 %) → quota 5" in out
    )
    assert out.strip().endswith("dry run: nothing was queued") and not Batch.objects.exists()

    call_command(*args, "--hard-examples-from", str(classifier.pk))
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert batch.quotas["MEL:6"] == 5 and batch.origin["classifier_run"] == classifier.pk

    with pytest.raises(CommandError, match="drop --diagnosis"):
        call_command(*args, "--hard-examples-from", str(classifier.pk), "--diagnosis", "MEL")
    with pytest.raises(CommandError, match="--dry-run goes with --hard-examples-from"):
        call_command(*args, "--dry-run")
    with pytest.raises(CommandError, match="no stratum has 50 or more"):
        call_command(*args, "--hard-examples-from", str(classifier.pk), "--min-images", "50")
    assert Batch.objects.count() == 1
