"""A v-prediction base model is launched (its training target is v, see
tests/fairskin/diffusion/test_v_prediction.py); LoRA target presets are stored expanded."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command

from catalog.models import Dataset
from training.models import Run
from training.services import RunConfigError, run_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "1", "--seed", "2")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def _configs_copy(tmp_path: Path, prediction_type: str) -> Path:
    from django.conf import settings

    from fairskin.diffusion.base_models import resolve_base_model

    tiny = Path(resolve_base_model("tiny", cache_dir=settings.FAIRSKIN_MODEL_CACHE).path)
    folder = tmp_path / f"tiny-{prediction_type}"
    for path in tiny.rglob("*.json"):  # the configs are all a launch reads
        target = folder / path.relative_to(tiny)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text(
        json.dumps({**json.loads(scheduler.read_text()), "prediction_type": prediction_type})
    )
    return folder


def test_a_v_prediction_base_model_is_launched(demo, tmp_path):
    folder = _configs_copy(tmp_path, "v_prediction")
    run = run_create(
        kind="textual_inversion",
        selection={"datasets": ["demo"]},
        base_model=str(folder),
        enqueue=False,
    )
    assert Run.objects.filter(pk=run.pk, base_model=str(folder)).exists()


def test_a_sample_prediction_base_model_is_refused_naming_it(demo, tmp_path):
    folder = _configs_copy(tmp_path, "sample")
    with pytest.raises(RunConfigError, match=r"tiny-sample.*predicts 'sample'"):
        run_create(
            kind="textual_inversion", selection={"datasets": ["demo"]}, base_model=str(folder)
        )
    assert not Run.objects.exists()


def test_lora_target_presets_are_stored_as_the_module_names_they_stand_for(demo):
    ti = run_create(
        kind="textual_inversion", selection={"datasets": ["demo"]}, base_model="tiny", enqueue=False
    )
    ti.job.state = "succeeded"
    ti.job.save(update_fields=["state"])
    lora = run_create(
        kind="lora",
        selection={"datasets": ["demo"]},
        parent=ti,
        config={"lora_targets": ["self_attention", "attn2.to_v"]},
        enqueue=False,
    )
    assert lora.config["lora_targets"] == [
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_v",
    ]
    default = run_create(kind="lora", selection={"datasets": ["demo"]}, parent=ti, enqueue=False)
    assert default.config["lora_targets"] == [
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
    ]
    with pytest.raises(RunConfigError, match="'attn2.to_qq'"):
        run_create(
            kind="lora",
            selection={"datasets": ["demo"]},
            parent=ti,
            config={"lora_targets": ["attn2.to_qq"]},
        )
