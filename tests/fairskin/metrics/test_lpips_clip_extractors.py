"""LPIPS and CLIP extractors: distances and embeddings that behave, seeded random weights
labelled uncalibrated, and local checkpoints loaded, hashed and preprocessed as the packages
expect. Nothing can be downloaded here, so every checkpoint is one the test writes itself."""

import hashlib
import json
from pathlib import Path

import lpips
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import alexnet

from fairskin.imaging.demo import draw_lesion
from fairskin.metrics.extractors import clip_image_embedder, lpips_metric

TINY_CLIP = str(Path(__file__).resolve().parents[2] / "fixtures" / "tiny_clip.json")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


@pytest.fixture(scope="module")
def lesions():
    """Four different 64 px demo images, (4, 3, 64, 64) in [0, 1]."""
    looks = [("MEL", 2), ("VASC", 5), ("NV", 1), ("DF", 6)]
    return torch.stack(
        [as_tensor(draw_lesion(dx, fst, seed=i, size=64)) for i, (dx, fst) in enumerate(looks)]
    )


@pytest.fixture(scope="module")
def random_lpips():
    return lpips_metric(None)


@pytest.fixture(scope="module")
def random_clip():
    return clip_image_embedder(TINY_CLIP, None)


def noisy(images, strength, seed):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + strength * noise).clamp(0, 1)


# --- LPIPS -------------------------------------------------------------------------------------


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(random_lpips, lesions):
    distance, _ = random_lpips
    same = distance(lesions, lesions.clone())
    assert same.shape == (4,) and torch.equal(same, torch.zeros(4))
    little, more, most = (distance(lesions, noisy(lesions, s, 1)) for s in (0.02, 0.1, 0.3))
    assert (little > 0).all()
    assert (little < more).all() and (more < most).all()
    # Symmetric, and one distance per pair: swapping a pair's members changes nothing.
    other = lesions.roll(1, dims=0)
    assert torch.allclose(distance(lesions, other), distance(other, lesions), atol=1e-6)


def test_lpips_random_trunk_is_seeded_labelled_and_leaves_the_global_rng_alone(
    random_lpips, lesions
):
    distance, info = random_lpips
    assert info.calibrated is False
    assert info.label == "lpips v0.1 alex (random weights: uncalibrated)"
    state = torch.random.get_rng_state()
    again, _ = lpips_metric(None)
    assert torch.equal(torch.random.get_rng_state(), state)
    other = lesions.flip(0)
    assert torch.equal(again(lesions, other), distance(lesions, other))


@pytest.fixture(scope="module")
def alexnet_checkpoint(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = alexnet(weights=None)
    path = tmp_path_factory.mktemp("weights") / "alexnet-local.pth"
    torch.save(model.state_dict(), path)
    return path, model


# lpips asks torchvision for alexnet(pretrained=False), a deprecated spelling of weights=None.
@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")
def test_lpips_loads_a_local_alexnet_into_the_trunk_and_names_its_hash(
    alexnet_checkpoint, random_lpips, lesions
):
    path, source = alexnet_checkpoint
    distance, info = lpips_metric(str(path))
    assert info.calibrated is True
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(info.weights)
    assert len(info.weights) >= 12 and "uncalibrated" not in info.label

    # The same metric built by hand: lpips' own linear layers, the checkpoint's convolutions
    # copied in order, and the documented [-1, 1] input.
    expected_model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    trunk_convs = [m for m in expected_model.net.modules() if isinstance(m, nn.Conv2d)]
    source_convs = [m for m in source.features if isinstance(m, nn.Conv2d)]
    assert len(trunk_convs) == len(source_convs) == 5
    for mine, theirs in zip(trunk_convs, source_convs, strict=True):
        mine.load_state_dict(theirs.state_dict())
    other = lesions.roll(1, dims=0)
    with torch.no_grad():
        expected = expected_model(lesions * 2 - 1, other * 2 - 1).flatten()
    np.testing.assert_allclose(distance(lesions, other), expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(distance(lesions, other), random_lpips[0](lesions, other))


def test_lpips_refuses_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no AlexNet weights file"):
        lpips_metric(str(tmp_path / "absent.pth"))
    foreign = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), foreign)
    with pytest.raises(ValueError, match="not a torchvision AlexNet state dict"):
        lpips_metric(str(foreign))


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64), "shapes differ"),
        (torch.rand(2, 3, 32, 32) * 255, torch.rand(2, 3, 32, 32), r"\[0, 1\]"),
        (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), r"\(N, 3, H, W\)"),
    ],
)
def test_lpips_refuses_bad_pairs(random_lpips, a, b, match):
    with pytest.raises(ValueError, match=match):
        random_lpips[0](a, b)


# --- CLIP --------------------------------------------------------------------------------------


def test_clip_embeddings_are_unit_float32_seeded_and_batch_independent(random_clip, lesions):
    embed, info = random_clip
    vectors = embed(lesions)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(embed(lesions[2:3])[0], vectors[2], atol=1e-5)
    assert info.calibrated is False and info.label.endswith("(random weights: uncalibrated)")
    state = torch.random.get_rng_state()
    again, _ = clip_image_embedder(TINY_CLIP, None)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(again(lesions), vectors)


def test_clip_identical_images_give_cosine_one_and_different_images_less(random_clip, lesions):
    embed, _ = random_clip
    vectors = embed(torch.cat([lesions, lesions[:1].clone()]))
    cosine = vectors @ vectors.T
    assert cosine[0, 4] == pytest.approx(1.0, abs=1e-6)
    off_diagonal = cosine[:4, :4][~np.eye(4, dtype=bool)]
    assert off_diagonal.max() < 0.999


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """Tiny CLIP weights unlike the embedder's own seed, saved as a state dict."""
    config = json.loads(Path(TINY_CLIP).read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = open_clip.CLIP(**config)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_clip_checkpoint_is_loaded_hashed_and_normalised_as_openai_clip(
    clip_checkpoint, random_clip, lesions
):
    path, source = clip_checkpoint
    embed, info = clip_image_embedder(TINY_CLIP, str(path))
    assert info.calibrated is True
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(info.weights)
    vectors = embed(lesions)  # already at the tiny model's 64 px: no resizing involved
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.normalize(source.encode_image((lesions - mean) / std), dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(vectors, random_clip[0](lesions), atol=1e-3)


def test_larger_images_are_resized_like_open_clips_own_preprocessing(clip_checkpoint):
    path, source = clip_checkpoint
    embed, _ = clip_image_embedder(TINY_CLIP, str(path))
    pictures = [draw_lesion(dx, fst, seed=3, size=256) for dx, fst in [("MEL", 3), ("BKL", 6)]]
    ours = embed(torch.stack([as_tensor(p) for p in pictures]))
    # open_clip's PIL pipeline for the same model: bicubic resize, crop, tensor, normalise.
    transform = open_clip.image_transform(64, is_train=False)
    with torch.no_grad():
        theirs = F.normalize(
            source.encode_image(torch.stack([transform(p) for p in pictures])), dim=-1
        ).numpy()
    # PIL and torch bicubic differ by rounding only, so the embeddings nearly coincide.
    assert (ours * theirs).sum(axis=1).min() > 0.999


def test_clip_refuses_unknown_models_bad_configs_and_foreign_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Nope'"):
        clip_image_embedder("ViT-Nope", None)
    with pytest.raises(FileNotFoundError):
        clip_image_embedder(str(tmp_path / "absent.json"), None)
    not_clip = tmp_path / "not_clip.json"
    not_clip.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ValueError, match="needs embed_dim, vision_cfg and text_cfg"):
        clip_image_embedder(str(not_clip), None)
    foreign = tmp_path / "linear.pt"
    torch.save(nn.Linear(3, 2).state_dict(), foreign)
    with pytest.raises(ValueError, match="not an open_clip checkpoint"):
        clip_image_embedder(TINY_CLIP, str(foreign))


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (torch.rand(2, 3, 64, 64) * 255, ValueError),
        (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), ValueError),
        (np.zeros((2, 3, 64, 64), dtype=np.float32), TypeError),
    ],
)
def test_clip_refuses_bad_batches(random_clip, batch, error):
    with pytest.raises(error):
        random_clip[0](batch)
