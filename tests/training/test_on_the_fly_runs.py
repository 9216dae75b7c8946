"""On-the-fly classifier runs as an engineer launches them (the train command, the service,
a real Celery worker) with the tiny LoRA generating: the run trains on images it made and
recorded, says everywhere that they are unstudied, and none of them can reach a release."""

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Image
from jobs.models import Job, JobState
from tests.conftest import wait_for
from tests.factories import make_user
from tests.generation.conftest import _finished_run, tiny_artifacts  # noqa: F401
from training.models import Run, RunKind
from training.services import RunConfigError, run_create, run_mark_confidence_model

FLY = {
    "arch": "resnet18",
    "image_size": 32,
    "epochs": 2,
    "bootstrap": 30,
    "batch_size": 16,
    "learning_rate": 0.001,
    "on_the_fly_share": 1.0,
    "on_the_fly_per_epoch": 4,
    "on_the_fly_cache": 8,
    "on_the_fly_steps": 2,
    "on_the_fly_micro_batch": 2,
}


def seed(capsys):
    call_command("seed_demo", "--per-class", "3", "--seed", "1")
    capsys.readouterr()


def lora(tiny_artifacts):  # noqa: F811
    ti_dir, lora_dir = tiny_artifacts
    return _finished_run(
        RunKind.LORA, lora_dir, parent=_finished_run(RunKind.TEXTUAL_INVERSION, ti_dir)
    )


def record(run: Run) -> dict:
    return json.loads(Path(run.folder, "on_the_fly.json").read_text())


def fingerprint(run: Run) -> list[tuple]:
    return [(r["index"], r["seed"], r["sha256"]) for r in record(run)["images"]]


@pytest.mark.django_db
def test_the_train_command_runs_one_and_every_page_says_its_images_are_unstudied(
    tiny_artifacts,  # noqa: F811
    client,
    capsys,
):
    seed(capsys)
    model = lora(tiny_artifacts)
    settings = [f"--set={k}={v}" for k, v in {**FLY, "on_the_fly_model": model.pk}.items()]
    call_command(
        "train", "--kind", "classifier", "--dataset", "demo", "--wait", "--name", "fly", *settings
    )
    run = Run.objects.get(name="fly")
    assert run.job.state == JobState.SUCCEEDED, run.job.error
    summary = run.evaluation["on_the_fly"]
    assert summary["images_generated"] == 8 and summary["studied"] is False
    assert summary["draws"] == sum(sum(r["draws"].values()) for r in record(run)["images"]) > 0
    made = {r["sha256"] for r in record(run)["images"]}
    # The images live in the run's folder only: nothing in the catalog (where every release
    # is built from) holds one of them.
    assert not Image.objects.filter(sha256__in=made).exists()
    manifest = json.loads(Path(run.folder, "manifest.json").read_text())
    assert manifest["on_the_fly_model"]["run_id"] == model.pk
    assert manifest["on_the_fly_model"]["lineage"] == [model.parent_id, model.pk]
    # Trained on synthetic images: never the confidence model that grades generation.
    assert run.uses_synthetic and run.training_data == "with unstudied on-the-fly images"
    with pytest.raises(RunConfigError, match="real images only"):
        run_mark_confidence_model(run=run)

    call_command("train", "--kind", "classifier", "--dataset", "demo", "--wait", "--name", "base",
                 "--set=arch=resnet18", "--set=image_size=32", "--set=epochs=1",
                 "--set=bootstrap=30")  # fmt: skip
    baseline = Run.objects.get(name="base")
    client.force_login(make_user("engineer"))
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert 'data-testid="on-the-fly"' in page and "unstudied" in page
    assert "8 images generated" in page and "no release can contain them" in page
    assert reverse("training:artifact", args=[run.pk, "on_the_fly.json"]) in page
    served = client.get(reverse("training:artifact", args=[run.pk, "on_the_fly.json"]))
    assert json.loads(b"".join(served.streaming_content))["images"] == record(run)["images"]
    plan = client.get(reverse("generation:hard_examples", args=[run.pk])).content.decode()
    assert 'data-testid="hard-example-unstudied"' in plan
    plain = client.get(reverse("generation:hard_examples", args=[baseline.pk])).content.decode()
    assert "hard-example-unstudied" not in plain
    report = client.get(reverse("training:fairness"), {"baseline": baseline.pk, "runs": run.pk})
    text = report.content.decode()
    assert f'data-testid="unstudied-{run.pk}"' in text
    assert "These verdicts rest on unstudied data" in text
    exported = client.get(
        reverse("training:fairness_export"), {"baseline": baseline.pk, "runs": run.pk}
    ).content.decode()
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(exported))}
    assert rows[str(run.pk)]["training_data"] == "with unstudied on-the-fly images"
    assert rows[str(run.pk)]["on_the_fly_images"] == "8"
    assert rows[str(baseline.pk)]["training_data"] == "real only"


@pytest.mark.django_db
def test_a_launch_that_cannot_generate_is_refused_and_creates_nothing(
    tiny_artifacts,  # noqa: F811
    capsys,
):
    seed(capsys)
    model = lora(tiny_artifacts)
    unfinished = Run.objects.create(kind=RunKind.LORA, base_model="tiny", artifacts_dir="x")
    before = Run.objects.count()
    for config, message in [
        ({**FLY, "on_the_fly_model": 10**6}, "is not a finished LoRA or joint run"),
        ({**FLY, "on_the_fly_model": unfinished.pk}, "is not a finished LoRA or joint run"),
        ({**FLY, "on_the_fly_model": model.parent_id}, "is not a finished LoRA or joint run"),
        ({**FLY, "on_the_fly_model": model.pk, "on_the_fly_share": 0.5}, "set on_the_fly_share"),
        ({**FLY}, "needs on_the_fly_model"),
    ]:
        with pytest.raises(RunConfigError, match=message):
            run_create(kind="classifier", selection={"datasets": ["demo"]}, config=config)
    with pytest.raises(CommandError, match="on_the_fly_cache must hold"):
        call_command("train", "--kind", "classifier", "--dataset", "demo",
                     f"--set=on_the_fly_model={model.pk}", "--set=on_the_fly_share=1",
                     "--set=on_the_fly_cache=2", "--set=on_the_fly_per_epoch=4")  # fmt: skip
    assert Run.objects.count() == before


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_makes_the_images_the_foreground_run_made(
    start_worker,
    tiny_artifacts,  # noqa: F811
    capsys,
):
    seed(capsys)
    model = lora(tiny_artifacts)
    config = {**FLY, "on_the_fly_model": model.pk, "epochs": 1}
    here = run_create(
        kind="classifier", selection={"datasets": ["demo"]}, config=config, enqueue=False
    )
    from jobs.runner import execute_job

    assert execute_job(job_id=here.job_id) == "succeeded"
    worker = start_worker(queues="gpu")
    there = run_create(kind="classifier", selection={"datasets": ["demo"]}, config=config)
    done = wait_for(
        lambda: (job := Job.objects.get(pk=there.job_id)).is_terminal and job,
        timeout=240,
        what="the on-the-fly run on the worker",
        workers=[worker],
    )
    assert done.state == JobState.SUCCEEDED, done.error
    there.refresh_from_db()
    here.refresh_from_db()
    assert fingerprint(there) == fingerprint(here) and len(fingerprint(here)) == 4
    assert there.evaluation["on_the_fly"]["draws"] == here.evaluation["on_the_fly"]["draws"]
