"""A tiny fine-tuned model for generation tests: trained once per session by the engine, then
registered per test as finished textual-inversion and LoRA runs on the demo dataset."""

from pathlib import Path

import pytest
from django.core.management import call_command

from catalog.models import Dataset
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.training import TrainItem, train
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import SilentProgress
from jobs.models import Job, JobState
from training.models import Run, RunKind

QUICK = {
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
}
SELECTION = {
    "datasets": ["demo"],
    "diagnoses": ["MEL", "NV"],
    "fsts": [1, 2, 3, 4, 5, 6],
    "split": "any",
    "synthetic_datasets": [],
}


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory) -> tuple[Path, Path]:
    from django.conf import settings

    base = resolve_base_model("tiny", cache_dir=Path(settings.FAIRSKIN_MODEL_CACHE))
    folder = tmp_path_factory.mktemp("train-images")
    items = []
    for i, (dx, fst) in enumerate([("MEL", 2), ("MEL", 6), ("NV", 3), ("NV", 5)]):
        path = folder / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), dx, fst))
    ti = tmp_path_factory.mktemp("ti")
    train(
        config=TrainConfig.build("textual_inversion", {"steps": 2, **QUICK}),
        base=base,
        items=items,
        run_dir=ti,
        progress=SilentProgress(),
    )
    lora = tmp_path_factory.mktemp("lora")
    train(
        config=TrainConfig.build("lora", {"steps": 2, **QUICK}),
        base=base,
        items=items,
        run_dir=lora,
        progress=SilentProgress(),
        parents=[ti],
    )
    return ti, lora


def _finished_run(kind: str, artifacts: Path, parent: Run | None = None) -> Run:
    job = Job.objects.create(kind="training.run", queue="gpu", state=JobState.SUCCEEDED)
    return Run.objects.create(
        kind=kind,
        base_model="tiny",
        parent=parent,
        job=job,
        artifacts_dir=str(artifacts),
        selection=SELECTION,
        tokens=["<dx-mel>"],
    )


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "3")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


@pytest.fixture
def lora_run(demo, tiny_artifacts) -> Run:
    ti_dir, lora_dir = tiny_artifacts
    ti = _finished_run(RunKind.TEXTUAL_INVERSION, ti_dir)
    return _finished_run(RunKind.LORA, lora_dir, parent=ti)
