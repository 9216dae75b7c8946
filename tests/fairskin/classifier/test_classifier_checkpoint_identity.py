"""Issue 15: a classifier run resumes only from a checkpoint written for it; another run's (or
one with other settings or images) is refused before it is loaded into anything."""

import pytest
import torch

from fairskin.classifier.config import ClassifierConfig
from fairskin.classifier.train import train_classifier
from fairskin.progress import SilentProgress
from fairskin.provenance import IdentityMismatch
from tests.fairskin.classifier.test_classifier_engine import QUICK, draw

torch.set_num_threads(1)


def test_a_classifier_checkpoint_of_another_run_or_setting_is_refused(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    train, test = draw(images, 3, 1), draw(images, 2, 2)
    config = ClassifierConfig.build({**QUICK, "epochs": 1})
    run_dir = tmp_path / "run-3-aaaaaaaaaaaa"
    train_classifier(
        config=config,
        train_items=train,
        test_items=test,
        run_dir=run_dir,
        progress=SilentProgress(),
    )
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["identity"]["identity"] == "run-3-aaaaaaaaaaaa"
    other = ClassifierConfig.build({**QUICK, "epochs": 2})
    with pytest.raises(IdentityMismatch, match="settings_hash"):
        train_classifier(
            config=other,
            train_items=train,
            test_items=test,
            run_dir=run_dir,
            progress=SilentProgress(),
        )
    with pytest.raises(IdentityMismatch, match="identity: recorded 'run-3-aaaaaaaaaaaa'"):
        train_classifier(
            config=config,
            train_items=train,
            test_items=test,
            run_dir=run_dir,
            progress=SilentProgress(),
            identity={**state["identity"], "identity": "run-3-bbbbbbbbbbbb"},
        )
    del state["identity"]  # a checkpoint written before records existed
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(IdentityMismatch, match="no identity record"):
        train_classifier(
            config=config,
            train_items=train,
            test_items=test,
            run_dir=run_dir,
            progress=SilentProgress(),
        )
