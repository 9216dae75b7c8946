"""A joint-refinement run is a model generation uses: `train` TI -> LoRA -> joint in the
foreground on the tiny model, then `generate --model <joint>` finishes its batch with the joint
run's refined tokens (which differ from its textual-inversion parent's)."""

from pathlib import Path

import pytest
import torch
from django.core.management import call_command

from catalog.models import Dataset
from fairskin.diffusion.artifacts import load_token_embeddings
from generation.models import Batch, BatchState, Sample
from training import reports
from training.models import Run

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
    "--set",
    "batch_size=2",
]


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "1", "--seed", "4")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def _train(capsys, kind: str, *args: str) -> Run:
    call_command(
        "train", "--kind", kind, "--dataset", "demo", "--steps", "2", "--wait", *FAST, *args
    )
    return Run.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-2]))


def test_a_joint_run_trained_by_the_command_generates(demo, capsys):
    ti = _train(capsys, "textual_inversion", "--base-model", "tiny")
    lora = _train(capsys, "lora", "--parent", str(ti.pk))
    joint = _train(capsys, "joint", "--parent", str(lora.pk), "--set", "learning_rate=0.01")
    refined = load_token_embeddings(Path(joint.folder))
    learned = load_token_embeddings(Path(ti.folder))
    assert set(refined) == set(learned)
    assert any(not torch.equal(refined[t], learned[t]) for t in refined)
    # What the run page reads: the joint run trains the cross-attention LoRA (rank 16 on the
    # tiny UNet: 16 * 1216, counted by hand in tests/fairskin/diffusion/test_lora_targets.py)
    # and one 32-wide embedding row per token.
    rows = len(joint.tokens) * 32
    assert rows > 0
    assert reports.training_report(joint)["trainable_parameters"] == {
        "lora": 16 * 1216,
        "embeddings": rows,
        "total": 16 * 1216 + rows,
    }
    assert reports.training_report(ti)["trainable_parameters"]["lora"] == 0

    call_command(
        "generate",
        "--model",
        str(joint.pk),
        "--count",
        "2",
        "--diagnosis",
        "MEL",
        "--steps",
        "2",
        "--wait",
    )
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert batch.state == BatchState.FINISHED, batch.job.error
    samples = Sample.objects.filter(batch=batch)
    assert samples.exists()
    assert {tuple(s.model_runs) for s in samples} == {(ti.pk, lora.pk, joint.pk)}
    assert all("<dx-mel>" in s.prompt for s in samples)
