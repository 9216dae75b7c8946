"""A run with the image prompt is launched only on a base model that has an image encoder;
otherwise it is refused at launch, naming the folder to add (issue 17, part 2)."""

from pathlib import Path

import pytest
from django.core.management import call_command

from catalog.models import Dataset
from training.models import Run
from training.services import RunConfigError, run_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def ti(capsys):
    call_command("seed_demo", "--per-class", "1", "--seed", "2")
    capsys.readouterr()
    assert Dataset.objects.filter(name="demo").exists()
    run = run_create(
        kind="textual_inversion", selection={"datasets": ["demo"]}, base_model="tiny", enqueue=False
    )
    run.job.state = "succeeded"
    run.job.save(update_fields=["state"])
    return run


def _configs_copy(folder: Path, *, image_encoder: bool) -> Path:
    from django.conf import settings

    from fairskin.diffusion.base_models import resolve_base_model

    tiny = Path(resolve_base_model("tiny", cache_dir=settings.FAIRSKIN_MODEL_CACHE).path)
    for path in tiny.rglob("*.json"):  # the configs are all a launch reads
        relative = path.relative_to(tiny)
        if relative.parts[0] == "image_encoder" and not image_encoder:
            continue
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(path.read_text())
    return folder


def test_the_image_prompt_needs_an_image_encoder_in_the_base_model(ti, tmp_path):
    without = _configs_copy(tmp_path / "no-encoder", image_encoder=False)
    ti.base_model = str(without)
    ti.save(update_fields=["base_model"])
    with pytest.raises(
        RunConfigError,
        match=f"add a CLIPVisionModelWithProjection folder at {without}/image_encoder",
    ):
        run_create(
            kind="lora",
            selection={"datasets": ["demo"]},
            parent=ti,
            config={"image_prompt": True},
            enqueue=False,
        )
    assert not Run.objects.filter(kind="lora").exists()
    # The same base without the image prompt launches; with an encoder, so does the prompt.
    run_create(kind="lora", selection={"datasets": ["demo"]}, parent=ti, enqueue=False)
    with_encoder = _configs_copy(tmp_path / "encoder", image_encoder=True)
    ti.base_model = str(with_encoder)
    ti.save(update_fields=["base_model"])
    lora = run_create(
        kind="lora",
        selection={"datasets": ["demo"]},
        parent=ti,
        config={"image_prompt": True},
        enqueue=False,
    )
    assert lora.config["image_prompt"] is True and lora.config["image_prompt_tokens"] == 4
