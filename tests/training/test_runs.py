import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Dataset
from jobs.models import Job, JobState
from tests.factories import RunFactory, make_user
from training.models import Run
from training.services import RunConfigError, run_create

pytestmark = pytest.mark.django_db
FAST = [
    "--set",
    "validation_every=1000",
    "--set",
    "validation_inference_steps=1",
    "--set",
    "grad_accumulation=1",
    "--set",
    "lr_warmup_steps=0",
]


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "1")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def nothing_created():
    return Run.objects.count() == 0 and Job.objects.filter(kind="training.run").count() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_rank": 0}, "lora_rank"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"lora_targets": ["to_qq"]}, "to_qq"),
        ({"steps": -1}, "steps"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_queued(demo, overrides, message):
    with pytest.raises(RunConfigError, match=message):
        run_create(kind="textual_inversion", selection={"datasets": ["demo"]}, config=overrides)
    assert nothing_created()


def test_empty_selection_unknown_dataset_and_missing_base_model_are_refused(demo):
    with pytest.raises(RunConfigError, match="selection is empty"):
        run_create(kind="textual_inversion", selection={"datasets": ["demo"], "split": "none"})
    with pytest.raises(RunConfigError, match="no dataset named nope"):
        run_create(kind="textual_inversion", selection={"datasets": ["nope"]})
    with pytest.raises(RunConfigError, match="not found"):
        run_create(
            kind="textual_inversion", selection={"datasets": ["demo"]}, base_model="/no/such/model"
        )
    with pytest.raises(RunConfigError, match="not in the local Hugging Face cache"):
        run_create(
            kind="textual_inversion",
            selection={"datasets": ["demo"]},
            base_model="someone/not-downloaded-model",
        )
    assert nothing_created()


def test_parents_must_be_of_the_right_kind_and_finished(demo):
    selection = {"datasets": ["demo"]}
    with pytest.raises(RunConfigError, match="needs a parent"):
        run_create(kind="lora", selection=selection)
    ti = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED)
    unfinished = RunFactory(kind="textual_inversion", job__state=JobState.RUNNING)
    lora = RunFactory(kind="lora", parent=ti, job__state=JobState.SUCCEEDED)
    before = Run.objects.count()
    with pytest.raises(RunConfigError, match="must be a Textual inversion run"):
        run_create(kind="lora", selection=selection, parent=lora)
    with pytest.raises(RunConfigError, match="must be a LoRA run"):
        run_create(kind="joint", selection=selection, parent=ti)
    with pytest.raises(RunConfigError, match="has not succeeded"):
        run_create(kind="lora", selection=selection, parent=unfinished)
    with pytest.raises(RunConfigError, match="takes no parent"):
        run_create(kind="textual_inversion", selection=selection, parent=ti)
    with pytest.raises(RunConfigError, match="same base model"):
        run_create(kind="lora", selection=selection, parent=ti, base_model="sd15-random")
    assert Run.objects.count() == before


def test_textual_inversion_only_dataset_is_refused_for_lora(demo):
    Dataset.objects.filter(pk=demo.pk).update(allowed_use="textual_inversion_only")
    ti = RunFactory(kind="textual_inversion", job__state=JobState.SUCCEEDED)
    with pytest.raises(RunConfigError, match="textual inversion only"):
        run_create(kind="lora", selection={"datasets": ["demo"]}, parent=ti)
    # ...but textual inversion itself may use it.
    run = run_create(kind="textual_inversion", selection={"datasets": ["demo"]}, enqueue=False)
    assert run.image_count > 0


def test_train_command_runs_ti_lora_and_joint_in_the_foreground(demo, capsys):
    call_command(
        "train",
        "--kind",
        "textual_inversion",
        "--base-model",
        "tiny",
        "--dataset",
        "demo",
        "--steps",
        "3",
        "--wait",
        *FAST,
    )
    lines = capsys.readouterr().out.strip().splitlines()
    ti = Run.objects.get(pk=int(lines[-2]))
    assert lines[-1] == str(ti.folder) and Path(ti.folder, "embeddings").is_dir()
    assert ti.job.state == JobState.SUCCEEDED and "<dx-mel>" in ti.tokens

    call_command(
        "train",
        "--kind",
        "lora",
        "--parent",
        str(ti.pk),
        "--dataset",
        "demo",
        "--steps",
        "3",
        "--wait",
        *FAST,
    )
    lora = Run.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-2]))
    call_command(
        "train",
        "--kind",
        "joint",
        "--parent",
        str(lora.pk),
        "--dataset",
        "demo",
        "--steps",
        "2",
        "--wait",
        *FAST,
    )
    joint = Run.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-2]))
    assert [r.pk for r in joint.lineage()] == [ti.pk, lora.pk, joint.pk]
    assert lora.base_model == "tiny"  # inherited from the parent
    assert Path(lora.folder, "pytorch_lora_weights.safetensors").exists()
    manifest = json.loads(Path(joint.folder, "manifest.json").read_text())
    assert manifest["parent_run_ids"] == [ti.pk, lora.pk]
    assert manifest["selection_hash"] == joint.selection_hash
    card = Path(ti.folder, "README.md").read_text()
    assert "Procedural images drawn by FairSkin" in card  # the dataset's licence


def test_train_command_refuses_bad_input_with_the_reason(demo):
    with pytest.raises(CommandError, match="lora_rank"):
        call_command("train", "--kind", "lora", "--dataset", "demo", "--set", "lora_rank=0")
    with pytest.raises(CommandError, match="no run 999"):
        call_command("train", "--kind", "lora", "--parent", "999")
    assert nothing_created()


def test_admin_launch_form_is_prefilled_and_queues_a_valid_run(
    client, demo, django_capture_on_commit_callbacks
):
    client.force_login(make_user("engineer"))
    url = reverse("admin:training_run_launch")
    page = client.get(url, {"kind": "lora"}).content.decode()
    assert "&quot;lora_rank&quot;: 16" in page and "cosine_with_restarts" in page
    bad = client.post(
        url,
        {
            "kind": "textual_inversion",
            "datasets": ["demo"],
            "split": "train",
            "config": '{"lora_rank": 0}',
        },
    )
    assert "lora_rank must be a positive whole number" in bad.content.decode()
    assert nothing_created()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url,
            {
                "kind": "textual_inversion",
                "datasets": ["demo"],
                "split": "train",
                "config": '{"steps": 5}',
            },
        )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "training:run", args=[run.pk]
    )
    assert run.config["steps"] == 5 and run.config["learning_rate"] == 5e-4
    assert run.job.queue == "gpu" and run.job.state == JobState.QUEUED


def test_run_page_shows_progress_loss_and_grid(client, demo, capsys):
    call_command(
        "train",
        "--kind",
        "textual_inversion",
        "--dataset",
        "demo",
        "--steps",
        "2",
        "--wait",
        "--set",
        "validation_every=2",
        "--set",
        "validation_inference_steps=1",
    )
    run = Run.objects.get()
    client.force_login(make_user("lead"))
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert "2 / 2 steps" in page and "<polyline" in page and "grid.png" in page
    grid = client.get(reverse("training:grid", args=[run.pk]))
    assert grid.status_code == 200 and grid["Content-Type"] == "image/png"
    assert "Resume" not in page and "Cancel" not in page  # leads watch, engineers act
    assert "&quot;steps&quot;: 2," in page  # settings shown as JSON, as the launch form takes
    assert "&quot;datasets&quot;: [" in page


def test_external_embeddings_import_as_a_run_that_lora_can_build_on(demo, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    # The merged token dictionary the public skin-diff project saves: several tokens, one file.
    merged = tmp_path / "learned_embeds.safetensors"
    save_file({"<skin-a>": torch.randn(32), "<skin-b>": torch.randn(32)}, str(merged))
    call_command("import_artifacts", str(merged), "--base-model", "tiny")
    lines = capsys.readouterr().out.strip().splitlines()
    run = Run.objects.get(pk=int(lines[-2]))
    assert run.kind == "textual_inversion" and sorted(run.tokens) == ["<skin-a>", "<skin-b>"]
    assert run.config["layout"] == "token-dictionary"
    assert sorted(p.name for p in Path(run.folder, "embeddings").iterdir()) == [
        "skin-a.safetensors",
        "skin-b.safetensors",
    ]
    lora = run_create(kind="lora", parent=run, selection={"datasets": ["demo"]}, enqueue=False)
    assert lora.base_model == "tiny"


def test_a_bad_external_file_is_refused_and_leaves_no_run(demo, tmp_path):
    import torch
    from safetensors.torch import save_file

    wrong_width = tmp_path / "sd2_embedding.safetensors"
    save_file({"<x>": torch.randn(1024)}, str(wrong_width))
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_artifacts", str(wrong_width), "--base-model", "tiny")
    assert nothing_created()
    assert not Job.objects.filter(kind="training.import_external").exists()


def test_a_base_model_that_predicts_neither_noise_nor_v_is_refused_at_launch(demo, tmp_path):
    """Training's target is the noise or v: a sample-prediction model would train on the
    wrong target."""
    from django.conf import settings

    from fairskin.diffusion.base_models import resolve_base_model

    tiny = Path(resolve_base_model("tiny", cache_dir=settings.FAIRSKIN_MODEL_CACHE).path)
    folder = tmp_path / "v-model"
    for path in tiny.rglob("*.json"):  # the configs are all a launch reads
        target = folder / path.relative_to(tiny)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text(
        json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "sample"})
    )
    with pytest.raises(RunConfigError, match="predicts 'sample'"):
        run_create(
            kind="textual_inversion", selection={"datasets": ["demo"]}, base_model=str(folder)
        )
    assert nothing_created()
