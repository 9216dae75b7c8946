"""Issue 15: a run resumes only from a checkpoint written for it (same run identity, settings,
images, parents and base model); any other checkpoint is refused before anything loads."""

import json

import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.checkpoints import latest_checkpoint, resume_point, run_identity
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.training import TrainItem, train
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import SilentProgress
from fairskin.provenance import IDENTITY_FILE, IdentityMismatch, read_identity
from tests.fairskin.diffusion.test_training_engine import FAST, CrashAt

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, (dx, fst) in enumerate([("MEL", 2), ("NV", 5), ("DF", 3)]):
        path = folder / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        out.append(TrainItem(str(path), dx, fst))
    return out


def identity(name="run-1-aaaaaaaaaaaa", **changes):
    record = run_identity(
        identity=name,
        config={"steps": 4},
        base_model="tiny",
        selection_hash="s" * 64,
        parents=[],
    )
    return {**record, **changes}


def test_a_checkpoint_of_another_run_is_refused_and_a_matching_one_resumed(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step-000006").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000006" / IDENTITY_FILE).write_text(
        json.dumps(identity("run-1-bbbbbbbbbbbb"))
    )
    with pytest.raises(IdentityMismatch, match="identity: recorded 'run-1-bbbbbbbbbbbb'"):
        resume_point(run_dir, identity())
    assert not (run_dir / IDENTITY_FILE).exists()  # nothing written for a refused folder
    # Same run, other settings or images: refused too, naming what differs.
    for change in ({"settings_hash": "x"}, {"selection_hash": "y"}, {"parents": ["run-0-z"]}):
        (run_dir / "checkpoints" / "step-000006" / IDENTITY_FILE).write_text(
            json.dumps(identity(**change))
        )
        with pytest.raises(IdentityMismatch, match=next(iter(change))):
            resume_point(run_dir, identity())
    (run_dir / "checkpoints" / "step-000006" / IDENTITY_FILE).write_text(json.dumps(identity()))
    assert resume_point(run_dir, identity()).name == "step-000006"
    assert read_identity(run_dir) == identity()


def test_an_unrecorded_checkpoint_is_refused_unless_the_folder_is_an_old_one(tmp_path):
    (tmp_path / "checkpoints" / "step-000002").mkdir(parents=True)
    with pytest.raises(IdentityMismatch, match="no identity record"):
        resume_point(tmp_path, identity())
    legacy = {**identity("run-1"), "accept_unrecorded": True}
    assert resume_point(tmp_path, legacy).name == "step-000002"
    assert "accept_unrecorded" not in read_identity(tmp_path)


def test_training_refuses_a_foreign_checkpoint_and_records_attempts(tiny, items, tmp_path):
    config = TrainConfig.build("textual_inversion", {"steps": 4, "checkpoint_every": 2, **FAST})
    run_dir = tmp_path / "run-7-cccccccccccc"
    with pytest.raises(RuntimeError, match="killed"):
        train(
            config=config,
            base=tiny,
            items=items,
            run_dir=run_dir,
            progress=CrashAt(3, RuntimeError("killed")),
        )
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint.name == "step-000002"
    assert read_identity(checkpoint)["identity"] == "run-7-cccccccccccc"
    # Other settings in the same folder: refused, nothing trained, the checkpoint kept.
    other = TrainConfig.build("textual_inversion", {"steps": 8, "checkpoint_every": 2, **FAST})
    with pytest.raises(IdentityMismatch, match="settings_hash"):
        train(config=other, base=tiny, items=items, run_dir=run_dir, progress=SilentProgress())
    assert latest_checkpoint(run_dir).name == "step-000002"
    resumed = train(
        config=config, base=tiny, items=items, run_dir=run_dir, progress=SilentProgress()
    )
    assert resumed.resumed_from == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["attempts"] == [
        {"attempt": 1, "resumed_from": None},
        {"attempt": 2, "resumed_from": 2},
    ]
    assert manifest["identity"]["identity"] == "run-7-cccccccccccc"
