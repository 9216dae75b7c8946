"""Inception feature extractor: provenance labels, checkpoint loading and hashing, the input
pipeline (resize + normalisation) and eval-mode behaviour. Random weights only: nothing here
can be downloaded."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception_v3

from fairskin.metrics.extractors import ExtractorInfo, inception_features_extractor


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def random_extractor():
    return inception_features_extractor(None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A torchvision Inception-v3 state dict with weights unlike the extractor's own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        for module in model.modules():
            # Scale-preserving weights, so the features are O(1) and a wrong input pipeline
            # shows far above float noise.
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            # Non-trivial BatchNorm statistics, so features computed in train mode, or with the
            # checkpoint ignored, differ visibly.
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_random_weights_are_labelled_uncalibrated(random_extractor):
    _, info = random_extractor
    assert info.calibrated is False
    assert info.label == "inception-v3 pool3 (random weights: uncalibrated)"


def test_label_for_calibrated_weights_names_the_hash():
    info = ExtractorInfo("inception-v3 pool3", "ab12cd34ef56ab78", True)
    assert info.label == "inception-v3 pool3 (weights sha256 ab12cd34ef56ab78…)"


def test_features_are_2048_d_deterministic_and_batch_independent(random_extractor, images):
    extract, _ = random_extractor
    features = extract(images)
    assert isinstance(features, np.ndarray) and features.shape == (2, 2048)
    assert np.isfinite(features).all()
    # Eval mode: BatchNorm uses running statistics, so one image's features do not depend on
    # the rest of its batch, and dropout does not make repeated calls differ.
    np.testing.assert_allclose(extract(images[:1])[0], features[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(extract(images), features)


def test_random_features_respond_to_the_images(random_extractor, images):
    # Guards the random init: with PyTorch's default conv init the pool features vanish (~1e-8)
    # and every uncalibrated FID would be the eps offset, not the images.
    extract, _ = random_extractor
    features = extract(images)
    assert 0.01 < np.abs(features).mean() < 100
    assert np.abs(features[0] - features[1]).max() > 1e-2
    darker = extract(images * 0.5)
    assert np.abs(darker - features).max() > 1e-2


def test_random_weights_are_seeded_and_leave_the_global_rng_alone(random_extractor, images):
    state = torch.random.get_rng_state()
    again, _ = inception_features_extractor(None)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(again(images), random_extractor[0](images))


def test_local_checkpoint_is_loaded_hashed_and_preprocessed_as_torchvision_expects(
    checkpoint, random_extractor
):
    # 512 px like the preprocessed catalogue images: shrinking is where antialiasing matters.
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    path, source_model = checkpoint
    extract, info = inception_features_extractor(str(path))
    assert info.calibrated is True
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(info.weights)
    assert len(info.weights) >= 12
    assert info.weights in info.label and "uncalibrated" not in info.label

    features = extract(images)
    assert not np.allclose(features, random_extractor[0](images))
    # What torchvision's weights expect: a 299 px bilinear resize (antialiased, as torchvision's
    # Resize does), then [0, 1] pixels mapped to [-1, 1] (ImageNet normalisation followed by
    # transform_input).
    source_model.fc = nn.Identity()
    source_model.eval()
    resized = F.interpolate(
        images, size=(299, 299), mode="bilinear", align_corners=False, antialias=True
    )
    with torch.no_grad():
        expected = source_model(resized * 2 - 1).numpy()
    assert np.abs(expected).mean() > 0.01
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_missing_or_foreign_checkpoints_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError):
        inception_features_extractor(str(tmp_path / "absent.pth"))
    foreign = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), foreign)
    with pytest.raises(ValueError, match="not a torchvision Inception-v3"):
        inception_features_extractor(str(foreign))


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (torch.rand(2, 3, 32, 32) * 255, ValueError),  # 0-255 pixels
        (torch.rand(2, 1, 32, 32), ValueError),  # greyscale
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ValueError),
        (np.zeros((2, 3, 32, 32), dtype=np.float32), TypeError),
    ],
)
def test_bad_batches_are_rejected(random_extractor, batch, error):
    extract, _ = random_extractor
    with pytest.raises(error):
        extract(batch)
