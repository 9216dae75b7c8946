"""Issue 16, engineer pages that lead on: the launch form refuses another kind's settings and
takes preselections from links; finished runs link to the next step; artifacts are served
links (their names only, nothing outside the run's folder); the loss chart has labelled axes;
a classifier run shows its per-skin-type table; trainable parameter counts when recorded."""

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog.models import Dataset
from fairskin.classifier.fairness import fairness_report_multiclass, fst_group
from fairskin.diffusion.reports import write_training_report
from jobs.models import JobState
from tests.factories import DatasetFactory, RunFactory, make_user
from training.forms import kind_defaults
from training.models import Run

pytestmark = pytest.mark.django_db
LAUNCH = "admin:training_run_launch"


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def page(client, url, params=None) -> str:
    response = client.get(url, params or {})
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def selected_options(text: str, name: str) -> list[str]:
    """The values of the selected options of the <select name=...> in the page (the empty
    choice left out)."""
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', text, re.S)
    assert select, f"no select {name}"
    return [
        v for v in re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', select.group(1)) if v
    ]


# --- launch form: another kind's settings, the defaults per kind -----------------------------


def test_a_classifier_launch_with_textual_inversion_settings_names_the_mismatch(client, demo):
    client.force_login(make_user("engineer"))
    ti_settings = json.dumps(kind_defaults()["textual_inversion"])
    response = client.post(
        reverse(LAUNCH),
        {"kind": "classifier", "datasets": ["demo"], "split": "train", "config": ti_settings},
    )
    text = html.unescape(response.content.decode())
    assert response.status_code == 200 and Run.objects.count() == 0
    message = re.search(r"these (\d+) settings are for a ([^:]+) run, not a Classifier run", text)
    assert message, text[:3000]
    unknown = set(kind_defaults()["textual_inversion"]) - set(kind_defaults()["classifier"])
    assert int(message.group(1)) == len(unknown) > 20
    assert message.group(2) == "Textual inversion, LoRA or Joint refinement"
    assert "lora_rank" in text and "load the Classifier defaults" in text

    # The reverse: classifier settings in a textual-inversion launch.
    response = client.post(
        reverse(LAUNCH),
        {
            "kind": "textual_inversion",
            "datasets": ["demo"],
            "split": "train",
            "config": json.dumps(kind_defaults()["classifier"]),
        },
    )
    text = html.unescape(response.content.decode())
    assert "are for a Classifier run, not a Textual inversion run" in text
    assert Run.objects.count() == 0


def test_a_lora_launch_with_the_textual_inversion_defaults_untouched_is_refused(client, demo):
    client.force_login(make_user("engineer"))
    ti = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED)
    form = {"kind": "lora", "parent": ti.pk, "datasets": ["demo"], "split": "train"}
    response = client.post(
        reverse(LAUNCH), {**form, "config": json.dumps(kind_defaults()["textual_inversion"])}
    )
    text = html.unescape(response.content.decode())
    assert "these are the Textual inversion defaults, not the LoRA ones" in text
    assert Run.objects.count() == 1  # the parent only
    # One setting changed: meant, and left to the service (here it goes on to the base model).
    edited = {**kind_defaults()["textual_inversion"], "steps": 9}
    response = client.post(reverse(LAUNCH), {**form, "config": json.dumps(edited)})
    assert "defaults, not the LoRA ones" not in html.unescape(response.content.decode())


def test_settings_of_no_kind_are_left_to_the_service_which_names_them(client, demo):
    client.force_login(make_user("engineer"))
    response = client.post(
        reverse(LAUNCH),
        {"kind": "classifier", "datasets": ["demo"], "split": "train", "config": '{"epochz": 2}'},
    )
    text = html.unescape(response.content.decode())
    assert "unknown setting(s): epochz" in text and "not a Classifier run" not in text


def test_the_launch_page_carries_every_kinds_defaults_for_the_kind_switch(client, demo):
    client.force_login(make_user("engineer"))
    text = page(client, reverse(LAUNCH))
    script = re.search(r'<script id="kind-defaults" type="application/json">(.*?)</script>', text)
    assert script, "no defaults for the script"
    defaults = json.loads(script.group(1))
    assert set(defaults) == {"textual_inversion", "lora", "joint", "classifier"}
    assert defaults["lora"]["lr_scheduler"] == "cosine_with_restarts"
    assert (
        defaults["classifier"]["arch"] == "resnet50" and "lora_rank" not in defaults["classifier"]
    )
    assert "js/launch_form.js" in text


def test_a_classifier_launched_with_its_own_defaults_is_queued(
    client, demo, django_capture_on_commit_callbacks
):
    client.force_login(make_user("engineer"))
    settings = {**kind_defaults()["classifier"], "arch": "resnet18", "epochs": 1}
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            reverse(LAUNCH),
            {
                "kind": "classifier",
                "datasets": ["demo"],
                "split": "any",
                "config": json.dumps(settings),
            },
        )
    run = Run.objects.get()
    assert response.status_code == 302, html.unescape(response.content.decode())[:2000]
    assert run.kind == "classifier" and run.config["arch"] == "resnet18"


# --- preselection from links ----------------------------------------------------------------


def test_a_lora_launch_link_preselects_its_finished_parent_and_its_images(client, demo):
    client.force_login(make_user("engineer"))
    ti = RunFactory(
        kind="textual_inversion",
        job__state=JobState.SUCCEEDED,
        selection={"datasets": ["demo"], "diagnoses": ["MEL"], "fsts": [5, 6], "split": "val"},
    )
    text = page(client, reverse(LAUNCH), {"kind": "lora", "parent": ti.pk})
    assert selected_options(text, "parent") == [str(ti.pk)]
    assert selected_options(text, "kind") == ["lora"]
    assert selected_options(text, "datasets") == ["demo"]
    assert selected_options(text, "diagnoses") == ["MEL"]
    assert selected_options(text, "fsts") == ["5", "6"]
    assert selected_options(text, "split") == ["val"]
    assert "preselect-problems" not in text


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"kind": "lora", "parent": "999999"}, "'999999' is not a finished Textual inversion run"),
        ({"kind": "lora", "parent": "../1"}, "'../1' is not a finished Textual inversion run"),
        ({"kind": "lora", "parent": "²"}, "'²' is not a finished Textual inversion run"),
        ({"kind": "lora", "parent": "9" * 30}, "is not a finished Textual inversion run"),
        ({"kind": "textual_inversion", "parent": "1"}, "takes no parent run"),
        ({"kind": "classifier", "synthetic_datasets": "nope"}, "no synthetic dataset named 'nope'"),
        ({"kind": "classifier", "datasets": "nope"}, "no dataset named 'nope'"),
    ],
)
def test_a_link_that_cannot_be_preselected_says_why(client, demo, params, problem):
    client.force_login(make_user("engineer"))
    text = html.unescape(page(client, reverse(LAUNCH), params))
    assert problem in text
    assert selected_options(text, "parent") == []


def test_a_parent_of_the_wrong_kind_or_unfinished_is_not_preselected(client, demo):
    client.force_login(make_user("engineer"))
    lora = RunFactory(kind="lora", job__state=JobState.SUCCEEDED)
    running = RunFactory(kind="textual_inversion", job__state=JobState.RUNNING)
    for run in (lora, running):
        text = html.unescape(page(client, reverse(LAUNCH), {"kind": "lora", "parent": run.pk}))
        assert f"'{run.pk}' is not a finished Textual inversion run" in text
        assert selected_options(text, "parent") == []


def test_a_classifier_link_preselects_a_synthetic_dataset(client, demo):
    client.force_login(make_user("engineer"))
    DatasetFactory(name="released-batch", source_format="synthetic")
    text = page(
        client,
        reverse(LAUNCH),
        {"kind": "classifier", "synthetic_datasets": "released-batch", "datasets": "demo"},
    )
    assert selected_options(text, "synthetic_datasets") == ["released-batch"]
    assert selected_options(text, "datasets") == ["demo"]
    assert "&quot;arch&quot;: &quot;resnet50&quot;" in text  # the classifier's defaults


def test_a_batch_link_preselects_its_model_run_and_refuses_others(client):
    client.force_login(make_user("engineer"))
    lora = RunFactory(kind="lora", job__state=JobState.SUCCEEDED)
    ti = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED)
    url = reverse("admin:generation_batch_launch")
    assert selected_options(page(client, url, {"model_run": lora.pk}), "model_run") == [
        str(lora.pk)
    ]
    for bad in (str(ti.pk), "x", "9" * 25):
        text = html.unescape(page(client, url, {"model_run": bad}))
        assert f"'{bad}' is not a finished LoRA or joint run" in text
        assert selected_options(text, "model_run") == []


# --- next-step links -------------------------------------------------------------------------


def next_links(text: str) -> dict[str, str]:
    block = re.search(r'data-testid="next-steps">(.*?)</p>', text, re.S)
    if not block:
        return {}
    return {
        label.strip().rstrip(" →"): html.unescape(href)
        for href, label in re.findall(
            r'<a class="button primary" href="([^"]+)">([^<]+)</a>', block.group(1)
        )
    }


def test_finished_runs_link_to_the_next_step_for_those_who_may_launch_it(client):
    engineer, lead = make_user("engineer"), make_user("lead")
    ti = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED)
    lora = RunFactory(kind="lora", parent=ti, job__state=JobState.SUCCEEDED)
    joint = RunFactory(kind="joint", parent=lora, job__state=JobState.SUCCEEDED)
    running = RunFactory(kind="textual_inversion", job__state=JobState.RUNNING)
    launch, batch = reverse(LAUNCH), reverse("admin:generation_batch_launch")

    client.force_login(engineer)
    assert next_links(page(client, reverse("training:run", args=[ti.pk]))) == {
        "Launch a LoRA run on this": f"{launch}?kind=lora&parent={ti.pk}"
    }
    assert next_links(page(client, reverse("training:run", args=[lora.pk]))) == {
        "Generate a batch with this model": f"{batch}?model_run={lora.pk}",
        "Refine it jointly (joint run)": f"{launch}?kind=joint&parent={lora.pk}",
    }
    assert next_links(page(client, reverse("training:run", args=[joint.pk]))) == {
        "Generate a batch with this model": f"{batch}?model_run={joint.pk}"
    }
    assert next_links(page(client, reverse("training:run", args=[running.pk]))) == {}
    # The live fragment carries them too (it replaces the page's top part while a run runs).
    assert next_links(page(client, reverse("training:live", args=[ti.pk])))

    # Following the link preselects the parent on the launch form.
    text = page(client, launch, {"kind": "lora", "parent": ti.pk})
    assert selected_options(text, "parent") == [str(ti.pk)]

    client.force_login(lead)  # leads watch runs; they launch nothing
    for run in (ti, lora, joint):
        assert next_links(page(client, reverse("training:run", args=[run.pk]))) == {}


# --- artifacts -------------------------------------------------------------------------------


@pytest.fixture
def run_with_files(tmp_path):
    folder = tmp_path / "runs" / "run-1-abc"
    (folder / "embeddings").mkdir(parents=True)
    (folder / "validation").mkdir()
    (folder / "loss.csv").write_text(
        "step,loss,grad_norm\n" + "".join(f"{s},{0.5 / s:.6f},1.0\n" for s in range(1, 41))
    )
    (folder / "manifest.json").write_text(json.dumps({"steps": 40}))
    (folder / "embeddings" / "dx-mel.safetensors").write_bytes(b"\x00weights")
    (folder / "validation" / "step-000040.png").write_bytes(b"\x89PNG fake")
    (folder / "labels.safetensors").write_bytes(b"\x00labels")
    (folder / "ip_adapter.safetensors").write_bytes(b"\x00adapter")
    (folder / "image_encoder").mkdir()
    (folder / "image_encoder" / "config.json").write_text("{}")
    (folder / "image_encoder" / "model.safetensors").write_bytes(b"\x00big")
    (tmp_path / "runs" / "secret.txt").write_text("not a run's file")
    (folder / "loss.svg").symlink_to(tmp_path / "runs" / "secret.txt")  # points outside
    return RunFactory(
        kind="textual_inversion", job__state=JobState.SUCCEEDED, artifacts_dir=str(folder)
    )


def test_artifacts_are_links_that_serve_the_files(client, run_with_files):
    run = run_with_files
    client.force_login(make_user("lead"))
    text = page(client, reverse("training:run", args=[run.pk]))
    listed = re.search(r'data-testid="artifacts">(.*?)</ul>', text, re.S).group(1)
    links = dict(re.findall(r'<a href="([^"]+)"><code>([^<]+)</code>', listed))
    base = f"/training/runs/{run.pk}/files/"
    assert links == {
        f"{base}manifest.json": "manifest.json",
        f"{base}loss.csv": "loss.csv",
        f"{base}embeddings/dx-mel.safetensors": "embeddings/dx-mel.safetensors",
        f"{base}validation/step-000040.png": "validation/step-000040.png",
        f"{base}labels.safetensors": "labels.safetensors",
        f"{base}ip_adapter.safetensors": "ip_adapter.safetensors",
        f"{base}image_encoder/config.json": "image_encoder/config.json",
    }  # loss.svg is a link out of the folder: not listed; nor the encoder's weights
    response = client.get(f"{base}loss.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert b"".join(response.streaming_content).startswith(b"step,loss,grad_norm\n1,0.5")
    weights = client.get(f"{base}embeddings/dx-mel.safetensors")
    assert weights.status_code == 200 and b"".join(weights.streaming_content) == b"\x00weights"
    assert weights["Content-Disposition"].startswith("attachment")
    assert "sandbox" in weights["Content-Security-Policy"]


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "..%2Fsecret.txt",
        "loss.svg",  # listed by name but a link to a file outside the folder
        "embeddings/../manifest.json",
        "%2Fetc%2Fpasswd",
        "checkpoints/step-1/trainable.safetensors",
        "nothing.json",
    ],
)
def test_an_artifact_outside_the_list_is_not_served(client, run_with_files, name):
    client.force_login(make_user("engineer"))
    response = client.get(f"/training/runs/{run_with_files.pk}/files/{name}")
    assert response.status_code == 404


def test_a_run_without_a_folder_serves_nothing_from_the_working_directory(client):
    run = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED, artifacts_dir="")
    assert Path("README.md").is_file()  # the tests run in the project folder
    client.force_login(make_user("engineer"))
    assert client.get(f"/training/runs/{run.pk}/files/README.md").status_code == 404
    assert "None yet." in page(client, reverse("training:run", args=[run.pk]))


def test_artifacts_are_for_those_who_may_see_runs(client, run_with_files):
    url = reverse("training:artifact", args=[run_with_files.pk, "loss.csv"])
    assert client.get(url).status_code == 302  # signed out: to the login page
    client.force_login(make_user("dermatologist"))
    assert client.get(url).status_code == 403


# --- loss chart, trainable parameters -------------------------------------------------------


def test_the_loss_chart_has_labelled_axes_and_ticks(client, run_with_files):
    client.force_login(make_user("lead"))
    text = page(client, reverse("training:run", args=[run_with_files.pk]))
    chart = re.search(r'<svg[^>]*data-testid="loss-chart".*?</svg>', text, re.S).group(0)
    titles = re.findall(r'class="axis-title"[^>]*>([^<]+)<', chart)
    assert titles == ["training step", "loss"]
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', chart)
    # loss from 0.0125 to 0.5: 0 to 0.6 by 0.2 (about five ticks); steps 1 to 40: 0 to 40 by 10
    assert ticks == ["0.0", "0.2", "0.4", "0.6", "0", "10", "20", "30", "40"]
    assert "Last: 0.0125 at step 40" in text


def test_trainable_parameters_show_when_the_report_records_them(client, run_with_files):
    client.force_login(make_user("engineer"))
    url = reverse("training:run", args=[run_with_files.pk])
    assert 'data-testid="trainable-parameters"' not in page(client, url)
    # Recorded when training starts (the training report), before the manifest has them.
    write_training_report(
        Path(run_with_files.folder),
        trainable_parameters={"lora": 1_234_567, "embeddings": 5_376, "total": 1_239_943},
    )
    table = re.search(
        r'data-testid="trainable-parameters"[^>]*>(.*?)</table>', page(client, url), re.S
    )
    cells = re.findall(r"<t[dh]>([^<]+)</t[dh]>", table.group(1))
    assert cells == ["LoRA", "1,234,567", "Token embeddings", "5,376", "Total", "1,239,943"]
    # A classifier run has no such report: nothing is shown.
    classifier = RunFactory(
        kind="classifier",
        job__state=JobState.SUCCEEDED,
        artifacts_dir=run_with_files.artifacts_dir,
    )
    text = page(client, reverse("training:run", args=[classifier.pk]))
    assert 'data-testid="trainable-parameters"' not in text


# --- classifier run: per skin type; fairness link -------------------------------------------


def evaluation(seed: int = 0, bootstrap: int = 0) -> dict:
    """A real evaluation (the engine's report) of scores that are good on light skin and
    chance on dark skin: FST V-VI must read lower than I-II."""
    rng = np.random.default_rng(seed)
    fsts = np.repeat([1, 2, 3, 4, 5, 6], 70)
    labels = rng.integers(0, 7, len(fsts))
    proba = rng.random((len(fsts), 7))
    light = fsts <= 2
    proba[light, labels[light]] += 3.0  # informative scores for FST I-II only
    proba /= proba.sum(axis=1, keepdims=True)
    names = [f"c{i}" for i in range(7)]

    def keyed(report):
        return json.loads(json.dumps(report, default=str))

    return {
        "by_fst": keyed(
            fairness_report_multiclass(
                labels, proba, fsts, class_names=names, n_bootstrap=bootstrap
            )
        ),
        "by_fst_group": keyed(
            fairness_report_multiclass(
                labels,
                proba,
                [fst_group(f) for f in fsts],
                class_names=names,
                n_bootstrap=bootstrap,
            )
        ),
    }


def test_a_classifier_run_shows_its_per_skin_type_table(client):
    run = RunFactory(
        kind="classifier", job__state=JobState.SUCCEEDED, evaluation=evaluation(bootstrap=20)
    )
    client.force_login(make_user("lead"))
    text = page(client, reverse("training:run", args=[run.pk]))
    table = re.search(r'data-testid="per-skin-type">(.*?)</table>', text, re.S).group(1)
    rows = [
        re.findall(r"<t[dh]>([^<]*)</t[dh]>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ][1:]  # the header row is first
    labels = [r[0] for r in rows]
    assert labels == [f"FST {n}" for n in ("I", "II", "III", "IV", "V", "VI")] + [
        "FST I–II",
        "FST III–IV",
        "FST V–VI",
    ]
    assert all(r[1] == "70" for r in rows[:6]) and rows[6][1] == "140"
    auroc = {r[0]: float(r[3]) for r in rows}
    assert auroc["FST I"] > 0.9 and auroc["FST II"] > 0.9  # informative there
    assert abs(auroc["FST VI"] - 0.5) < 0.15 and auroc["FST I–II"] > auroc["FST V–VI"] + 0.3
    low, high = (float(v) for v in rows[0][4].split("–"))
    assert low <= auroc["FST I"] <= high


def test_the_fairness_link_puts_a_synthetic_run_against_the_real_only_baseline(client):
    real = RunFactory(kind="classifier", job__state=JobState.SUCCEEDED, evaluation=evaluation())
    synthetic = RunFactory(
        kind="classifier",
        job__state=JobState.SUCCEEDED,
        evaluation=evaluation(1),
        selection={"datasets": ["demo"], "synthetic_datasets": ["released"]},
    )
    client.force_login(make_user("lead"))
    fairness = reverse("training:fairness")
    assert f'href="{fairness}?runs={synthetic.pk}"' in page(
        client, reverse("training:run", args=[synthetic.pk])
    )
    assert f'href="{fairness}?baseline={real.pk}"' in page(
        client, reverse("training:run", args=[real.pk])
    )
    # Followed: the baseline select holds the real-only run, the compared one the synthetic.
    text = page(client, fairness, {"runs": synthetic.pk})
    assert selected_options(text, "baseline") == [str(real.pk)]
    assert selected_options(text, "runs") == [str(synthetic.pk)]
    # With nothing asked, too, although the synthetic run is the newer one.
    assert selected_options(page(client, fairness), "baseline") == [str(real.pk)]
