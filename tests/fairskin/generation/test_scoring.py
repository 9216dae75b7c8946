"""Candidate scoring: crafted failures give the right reasons, uncalibrated checks are measured
but only applied when asked, relative thresholds come from the reference's real-vs-real values,
and a saved reference scores exactly like the one it was saved from.

Everything runs on CPU with random Inception/LPIPS/CLIP weights (nothing can be downloaded)
and a tiny classifier trained here on two clearly different demo classes."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from fairskin.classifier.model import CLASS_NAMES, build_classifier
from fairskin.generation.checks import Threshold
from fairskin.generation.extractors import Extractors
from fairskin.generation.held_out import filter_calibration, measure_held_out
from fairskin.generation.plan import decide_stratum
from fairskin.generation.reference import (
    PHASE_CLIP,
    PHASE_INCEPTION,
    PHASE_LPIPS,
    PHASE_MEMORIZATION,
    Reference,
)
from fairskin.generation.scoring import Scorer
from fairskin.generation.scoring_config import CHECK_NAMES, ScoringConfig, ScoringConfigError
from fairskin.generation.similarity import NearDuplicateCheck
from fairskin.imaging.demo import draw_lesion
from fairskin.metrics.extractors import lpips_metric
from fairskin.metrics.fid import feature_distances_to_reference
from fairskin.metrics.stats import StreamingGaussian
from tests.fairskin.recording import RecordingProgress

TINY_CLIP = str(Path(__file__).resolve().parents[2] / "fixtures" / "tiny_clip.json")
SIZE = 64
CLASSIFIER_SIZE = 32
# Small enough for CPU tests; the config must match what the reference was built with.
SETTINGS = {"lpips_reference_images": 4, "memorization_neighbours": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def load(path) -> torch.Tensor:
    with Image.open(path) as image:
        return as_tensor(image.convert("RGB"))


def check(score, name):
    return next(c for c in score.checks if c.name == name)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six real images each of FST II and V, and ten training images with ids."""
    folder = tmp_path_factory.mktemp("scoring")
    real = []
    for fst in (2, 5):
        for seed in range(6):
            path = folder / f"real-{fst}-{seed}.png"
            draw_lesion("MEL" if seed % 2 else "NV", fst, seed=seed, size=SIZE).save(path)
            real.append((str(path), fst))
    training = []
    for seed in range(10):
        path = folder / f"train-{seed}.png"
        dx = ("MEL", "VASC", "BKL", "DF", "NV")[seed % 5]
        draw_lesion(dx, 1 + seed % 6, seed=50 + seed, size=SIZE).save(path)
        training.append((f"train-{seed}", str(path)))
    return real, training


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A resnet18 trained to tell MEL from VASC demo images, saved in a run's layout."""
    images, labels = [], []
    for seed in range(12):
        for dx in ("MEL", "VASC"):
            images.append(as_tensor(draw_lesion(dx, 1 + seed % 6, seed=seed, size=SIZE)))
            labels.append(CLASS_NAMES.index(dx))
    x = torch.stack(images)
    y = torch.tensor(labels)
    small = F.interpolate(
        x, size=(CLASSIFIER_SIZE,) * 2, mode="bilinear", antialias=True, align_corners=False
    )
    normalised = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(small)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _ = build_classifier(arch="resnet18")
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(30):
            batch = torch.randperm(len(y))[:16]
            loss = F.cross_entropy(model(normalised[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    run_dir = tmp_path_factory.mktemp("classifier")
    torch.save(model.state_dict(), run_dir / "classifier.pt")
    manifest = {
        "config": {"arch": "resnet18", "image_size": CLASSIFIER_SIZE},
        "classes": CLASS_NAMES,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir, x[0]  # x[0] is a MEL image the classifier was fitted on


@pytest.fixture(scope="module")
def extractors(classifier):
    return Extractors.load(device="cpu", clip_model=TINY_CLIP, classifier_dir=classifier[0])


@pytest.fixture(scope="module")
def built(extractors, files):
    real, training = files
    progress = RecordingProgress()
    reference = Reference.build(
        extractors,
        real=real,
        training=training,
        size=SIZE,
        lpips_images=4,
        batch_size=4,
        memorization_neighbours=3,
        progress=progress,
    )
    return reference, progress


@pytest.fixture(scope="module")
def reference(built):
    return built[0]


def make_scorer(extractors, reference, **settings):
    return Scorer(extractors, reference, ScoringConfig.build({**SETTINGS, **settings}), size=SIZE)


# --- configuration -----------------------------------------------------------------------------


def test_config_defaults_calibrate_distance_checks_and_round_trip():
    config = ScoringConfig.build(None)
    assert config == ScoringConfig()
    assert (config.brightness_low, config.brightness_high) == (0.1, 0.9)
    # Every distance check is calibrated on held-out real images at the spec's percentile; the
    # classifier's confidence keeps the planning document's absolute 0.6.
    calibrated = Threshold(None, "calibrated", 95.0)
    assert config.lpips_real == config.memorization == config.fid == calibrated
    assert config.confidence == Threshold(0.6)
    assert config.duplicate_cosine == 0.95 and config.apply_uncalibrated == ()
    # The batch's filter percentile reaches every calibrated threshold that names none.
    at_90 = ScoringConfig.build(
        {"lpips_real": {"mode": "calibrated", "percentile": 99}}, percentile=90
    )
    assert at_90.fid == at_90.memorization == Threshold(None, "calibrated", 90.0)
    assert at_90.lpips_real == Threshold(None, "calibrated", 99.0)
    custom = ScoringConfig.build(
        {
            "fid": {"mode": "relative", "percentile": 90},
            "lpips_real": 0.25,
            "memorization": {"value": 0.1},
            "apply_uncalibrated": ["fid", "duplicate", "fid"],
            "memorization_neighbours": 8,
        }
    )
    assert custom.fid == Threshold(None, "relative", 90.0)
    # Absolute thresholds stay available as explicit options.
    assert custom.lpips_real == Threshold(0.25) and custom.memorization == Threshold(0.1)
    assert custom.apply_uncalibrated == ("fid", "duplicate")
    stored = json.loads(json.dumps(custom.to_dict()))
    assert ScoringConfig.build(stored) == custom
    # Settings stored by older batches (a value beside a relative mode) still load.
    old = {"value": 30.0, "mode": "relative", "percentile": 95.0}
    assert ScoringConfig.build({"fid": old}).fid == Threshold(None, "relative", 95.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("strict", "scoring settings must be an object"),
        ({"sharpness": 1}, r"unknown scoring setting\(s\): sharpness"),
        ({"brightness_low": "dark"}, "brightness_low must be a number, got 'dark'"),
        ({"brightness_high": 1.5}, r"brightness_high must be in \[0, 1\], got 1.5"),
        (
            {"brightness_low": 0.8, "brightness_high": 0.2},
            r"brightness_low \(0.8\) must be below brightness_high \(0.2\)",
        ),
        ({"confidence": 1.2}, r"confidence must be in \[0, 1\], got 1.2"),
        ({"lpips_real": -0.1}, "lpips_real must be >= 0, got -0.1"),
        ({"fid": True}, "fid must be a number or an object with value, mode and percentile"),
        (
            {"fid": {"value": 30, "mode": "median"}},
            "fid: unknown threshold mode 'median' \\(use absolute, calibrated, relative\\)",
        ),
        (
            {"fid": {"mode": "relative", "percentile": 0}},
            r"fid: percentile must be in \(0, 100\], got 0",
        ),
        (
            {"fid": {"mode": "relative", "percentile": 101}},
            r"fid: percentile must be in \(0, 100\], got 101",
        ),
        (
            {"memorization": {"mode": "absolute"}},
            "memorization: an absolute threshold needs a value",
        ),
        ({"memorization": {"value": 0.1, "limit": 2}}, r"memorization: unknown key\(s\) limit"),
        (
            {"apply_uncalibrated": ["fid", "sharpness"]},
            r"apply_uncalibrated: unknown check\(s\) sharpness",
        ),
        ({"apply_uncalibrated": "fid"}, "apply_uncalibrated must be a list of check names"),
        ({"duplicate_cosine": 0}, r"duplicate_cosine must be in \(0, 1\], got 0"),
        (
            {"memorization_neighbours": 0},
            "memorization_neighbours must be a whole number >= 1, got 0",
        ),
        (
            {"lpips_reference_images": True},
            "lpips_reference_images must be a whole number >= 1, got True",
        ),
    ],
)
def test_bad_scoring_configs_are_refused_with_a_specific_message(data, message):
    with pytest.raises(ScoringConfigError, match=message):
        ScoringConfig.build(data)


def test_every_problem_is_named_at_once():
    with pytest.raises(ScoringConfigError) as raised:
        ScoringConfig.build({"sharpness": 1, "fid": -1, "confidence": "high"})
    text = str(raised.value)
    assert "sharpness" in text and "fid must be >= 0" in text and "confidence must be" in text


# --- crafted failures --------------------------------------------------------------------------


def test_a_black_image_fails_brightness_with_the_reason(extractors, reference, files):
    lesion = load(files[0][0][0])
    scores = make_scorer(extractors, reference).score(
        torch.stack([torch.zeros(3, SIZE, SIZE), lesion]), diagnoses=["MEL", "NV"], fsts=[2, 2]
    )
    assert scores[0].metrics["brightness"] == 0.0
    assert scores[0].reasons == ("brightness 0.000 outside [0.1, 0.9]",)
    assert check(scores[1], "brightness").passed
    assert all(check(s, "resolution").passed for s in scores)


def test_a_wrong_diagnosis_fails_confidence_with_the_intended_class_probability(
    extractors, reference, classifier
):
    melanoma = classifier[1]
    scores = make_scorer(extractors, reference).score(
        torch.stack([melanoma, melanoma]), diagnoses=["MEL", "VASC"], fsts=[2, 2]
    )
    right, wrong = (check(s, "confidence") for s in scores)
    assert right.calibrated and right.applied and right.passed
    # The classifier was fitted on this MEL image: the intended VASC gets the small side of
    # its two-way split (0.11 on this machine's torch build), far under the 0.6 threshold.
    assert not wrong.passed and wrong.value < 0.5 < right.value
    assert scores[1].reasons == (f"confidence {wrong.value:.3f} < 0.600",)
    # The value is the softmax probability of the intended class, with the classifier's own
    # evaluation preprocessing (torchvision Resize on the tensor, ImageNet normalisation).
    model = extractors.classifier[0]
    preprocess = T.Compose(
        [
            T.Resize((CLASSIFIER_SIZE, CLASSIFIER_SIZE), antialias=True),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    with torch.no_grad():
        probabilities = torch.softmax(model(preprocess(melanoma)[None]), dim=1)[0]
    assert right.value == pytest.approx(probabilities[CLASS_NAMES.index("MEL")].item(), abs=1e-5)
    assert wrong.value == pytest.approx(probabilities[CLASS_NAMES.index("VASC")].item(), abs=1e-5)
    assert scores[0].metrics["confidence"] == right.value


def test_an_exact_training_copy_is_found_and_flagged_once_memorization_is_enabled(
    extractors, reference, files
):
    _, training = files
    copy = load(training[7][1])
    default = make_scorer(extractors, reference, memorization=0.1).score(
        copy[None], diagnoses=["BKL"], fsts=[2]
    )[0]
    # The index proposes 3 of the 10 training images; the copy must be among them.
    assert default.metrics["memorization_nearest"] == "train-7"
    assert default.metrics["memorization_lpips"] == pytest.approx(0.0, abs=1e-6)
    memorization = check(default, "memorization")
    assert not memorization.passed and not memorization.applied
    assert not any(r.startswith("memorization") for r in default.reasons)

    enabled = make_scorer(
        extractors, reference, memorization=0.1, apply_uncalibrated=["memorization"]
    ).score(copy[None], diagnoses=["BKL"], fsts=[2])[0]
    assert "memorization 0.000 < 0.100 (uncalibrated)" in enabled.reasons
    # Calibrated by default: this reference has no held-out real images, so it is not judged.
    calibrated = make_scorer(extractors, reference, apply_uncalibrated=["memorization"]).score(
        copy[None], diagnoses=["BKL"], fsts=[2]
    )[0]
    assert not check(calibrated, "memorization").rejects
    assert check(calibrated, "memorization").reason == (
        "memorization not judged: 0 held-out real images of FST I-VI, fewer than the 20 its "
        "calibrated threshold needs"
    )


def test_uncalibrated_checks_are_measured_but_only_applied_when_listed(extractors, reference):
    black = torch.zeros(1, 3, SIZE, SIZE)
    scorer = make_scorer(extractors, reference, fid=30)  # the old absolute default, explicit
    calibration = scorer.calibration()
    assert list(calibration) == list(CHECK_NAMES)
    for name in ("lpips_real", "memorization", "fid", "duplicate"):
        assert calibration[name]["calibrated"] is False
        assert calibration[name]["applied"] is False
        assert "uncalibrated" in calibration[name]["extractor"]
    assert calibration["confidence"] == {
        "calibrated": True,
        "applied": True,
        "extractor": extractors.classifier[2].label,
    }
    score = scorer.score(black, diagnoses=["MEL"], fsts=[5])[0]
    fid = check(score, "fid")
    assert fid.value > 30 and not fid.passed and not fid.rejects
    assert score.metrics["fid"] == fid.value
    assert not any(r.startswith(("fid", "lpips_real")) for r in score.reasons)

    strict = make_scorer(
        extractors, reference, apply_uncalibrated=["fid", "lpips_real"], lpips_real=0.01, fid=30
    )
    assert strict.calibration()["fid"]["applied"] is True
    score = strict.score(black, diagnoses=["MEL"], fsts=[5])[0]
    lpips_value = check(score, "lpips_real").value
    assert f"fid {fid.value:.3f} > 30.000 (uncalibrated)" in score.reasons
    assert f"lpips_real {lpips_value:.3f} > 0.010 (uncalibrated)" in score.reasons


def test_relative_thresholds_resolve_from_the_real_vs_real_values(extractors, reference, files):
    real, _ = files
    scorer = make_scorer(
        extractors,
        reference,
        apply_uncalibrated=["fid", "lpips_real"],
        fid={"mode": "relative", "percentile": 50},
        lpips_real={"mode": "relative", "percentile": 90},
    )
    images = torch.stack([load(real[8][0]), torch.zeros(3, SIZE, SIZE)])
    real_image, black = scorer.score(images, diagnoses=["MEL", "MEL"], fsts=[5, 5])
    fid_limit = np.percentile(reference.values_for("fid", 5), 50)
    lpips_limit = np.percentile(reference.values_for("lpips_real", 5), 90)
    # A real image of the stratum sits inside its Gaussian; a black one is far outside.
    assert check(real_image, "fid").passed and check(real_image, "fid").value < fid_limit
    black_fid, black_lpips = check(black, "fid"), check(black, "lpips_real")
    assert black.reasons == (
        "brightness 0.000 outside [0.1, 0.9]",
        f"lpips_real {black_lpips.value:.3f} > {lpips_limit:.3f} (uncalibrated)",
        f"fid {black_fid.value:.3f} > {fid_limit:.3f} (uncalibrated)",
    )


def test_real_vs_real_fid_values_leave_each_image_out(extractors, reference, files):
    real, _ = files
    features = extractors.inception[0](torch.stack([load(p) for p, fst in real if fst == 5]))
    expected = []
    for i in range(len(features)):
        others = StreamingGaussian(features.shape[1])
        others.update(np.delete(features, i, axis=0))
        expected.append(feature_distances_to_reference(features[i : i + 1], others)[0])
    np.testing.assert_allclose(reference.values_for("fid", 5), expected, rtol=1e-3)
    # In-sample distances would be bounded by about sqrt(n); these are not.
    assert min(expected) > 10


def test_real_vs_real_lpips_values_are_mean_distances_to_the_other_reference_images(
    extractors, reference, files
):
    real, _ = files
    chosen = reference.lpips_images[2]
    assert chosen.dtype == torch.uint8 and chosen.shape == (4, 3, SIZE, SIZE)
    originals = [load(p) for p, fst in real if fst == 2]
    pixels = chosen.float() / 255
    assert all(any(torch.equal(image, o) for o in originals) for image in pixels)
    distance = extractors.lpips[0]
    expected = [
        np.mean([distance(pixels[i : i + 1], pixels[j : j + 1]).item() for j in range(4) if j != i])
        for i in range(4)
    ]
    np.testing.assert_allclose(reference.values_for("lpips_real", 2), expected, rtol=1e-5)


def test_reference_build_reports_progress_and_keeps_its_caps(built):
    reference, progress = built
    # Each part has its own name and count (12 real images over 2 skin types, 10 training
    # images, all 10 searched for memorization), and each ends at its own total.
    assert [(p.name, p.total) for p in progress.recorded] == [
        (PHASE_INCEPTION, 12),
        (PHASE_LPIPS, 2),
        (PHASE_CLIP, 10),
        (PHASE_MEMORIZATION, 10),
    ]
    assert all(p.start == 0 and p.last_done == p.total for p in progress.recorded)
    assert set(reference.inception) == {2, 5}
    assert reference.inception[2].count == 6
    assert reference.inception_sample[2].shape == (6, 2048)
    assert reference.inception_sample[2].dtype == np.float32
    assert reference.training_embeddings.shape == (10, 32)
    memorization = reference.values_for("memorization", 3)
    assert memorization.shape == (10,) and (memorization > 0).all()


def test_reference_choice_of_lpips_images_is_seeded(extractors, files):
    real = [item for item in files[0] if item[1] == 2]

    def chosen(seed):
        built = Reference.build(
            extractors, real=real, training=[], size=SIZE, lpips_images=3, seed=seed
        )
        return built.lpips_images[2]

    first = chosen(0)
    assert torch.equal(first, chosen(0))
    assert not torch.equal(first, chosen(1))


def test_a_saved_reference_scores_exactly_like_the_original(extractors, reference, files, tmp_path):
    real, training = files
    reference.save(tmp_path / "ref")
    assert sorted(p.suffix for p in (tmp_path / "ref").iterdir()) == [
        ".json",
        ".npz",
        ".safetensors",
    ]
    loaded = Reference.load(tmp_path / "ref", "cpu")
    for fst in (2, 5):
        np.testing.assert_array_equal(loaded.inception[fst].mean, reference.inception[fst].mean)
        np.testing.assert_array_equal(
            loaded.inception[fst].covariance, reference.inception[fst].covariance
        )
        np.testing.assert_array_equal(loaded.inception_sample[fst], reference.inception_sample[fst])
    images = torch.stack([load(real[0][0]), load(training[2][1]), torch.zeros(3, SIZE, SIZE)])
    arguments = {"diagnoses": ["MEL", "VASC", "NV"], "fsts": [2, 5, 2]}
    settings = {
        "fid": {"mode": "relative", "percentile": 95},
        "apply_uncalibrated": ["fid", "memorization"],
    }
    before = make_scorer(extractors, reference, **settings).score(images, **arguments)
    after = make_scorer(extractors, loaded, **settings).score(images, **arguments)
    assert [s.to_dict() for s in after] == [s.to_dict() for s in before]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a.clip_embedding, b.clip_embedding)


def test_a_skin_type_without_real_images_is_not_measured_and_never_rejects(extractors, reference):
    scorer = make_scorer(extractors, reference, apply_uncalibrated=["fid", "lpips_real"])
    score = scorer.score(torch.full((1, 3, SIZE, SIZE), 0.5), diagnoses=["NV"], fsts=[6])[0]
    assert score.metrics["lpips_real"] is None and score.metrics["fid"] is None
    for name in ("lpips_real", "fid"):
        result = check(score, name)
        assert not result.rejects
        assert result.reason == f"{name} not measurable: no real images of FST 6 in the reference"
    stored = json.loads(json.dumps(score.to_dict()))
    assert next(c for c in stored["checks"] if c["name"] == "fid")["value"] is None


def test_candidate_scores_carry_their_embedding_and_features(extractors, reference, files):
    image = load(files[0][3][0])
    score = make_scorer(extractors, reference).score(image[None], diagnoses=["MEL"], fsts=[2])[0]
    assert score.clip_embedding.dtype == np.float32 and score.clip_embedding.shape == (32,)
    np.testing.assert_allclose(score.clip_embedding, extractors.clip[0](image[None])[0], atol=1e-6)
    assert score.inception_features.dtype == np.float32
    np.testing.assert_allclose(
        score.inception_features, extractors.inception[0](image[None])[0], rtol=1e-5, atol=1e-5
    )
    assert set(score.metrics) == {
        "brightness",
        "lpips_real",
        "memorization_lpips",
        "memorization_nearest",
        "confidence",
        "fid",
    }
    assert [c.name for c in score.checks] == [n for n in CHECK_NAMES if n != "duplicate"]


def test_duplicates_are_only_decided_once_the_check_is_enabled(extractors, reference, files):
    """The scores' CLIP embeddings through the batch's near-duplicate check: the same image
    twice is a duplicate only while the check is applied (random CLIP weights: when asked)."""
    real, _ = files
    images = torch.stack([load(real[0][0]), load(real[0][0]), load(real[7][0])])
    scorer = make_scorer(extractors, reference)
    scores = scorer.score(images, diagnoses=["NV", "NV", "MEL"], fsts=[2, 2, 5])
    first, same, other = (s.clip_embedding for s in scores)
    clip_calibrated = extractors.provenance()["clip"]["calibrated"]
    assert clip_calibrated is False and scorer.calibration()["duplicate"]["applied"] is False
    off = NearDuplicateCheck.for_batch(scorer.config, clip_calibrated=clip_calibrated)
    assert off(same, [first]) is False

    config = ScoringConfig.build({**SETTINGS, "apply_uncalibrated": ["duplicate"]})
    enabled = NearDuplicateCheck.for_batch(config, clip_calibrated=clip_calibrated)
    assert enabled(same, [first]) is True
    assert enabled(other, [first]) is (float(other @ first) >= 0.95)
    assert enabled(first, []) is False
    decision = decide_stratum(
        2, 3, {i: ((), s.clip_embedding) for i, s in enumerate(scores)}, is_duplicate=enabled
    )
    assert decision.verdicts[1].reasons == ("near-duplicate of an accepted image",)


def test_calibrated_extractors_apply_their_checks_by_default(extractors, files, tmp_path):
    from torchvision.models import alexnet

    weights = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), weights)
    calibrated = Extractors(
        inception=extractors.inception, lpips=lpips_metric(str(weights)), clip=extractors.clip
    )
    real = [item for item in files[0] if item[1] == 2][:3]
    reference = Reference.build(calibrated, real=real, training=[], size=SIZE, lpips_images=4)
    scorer = make_scorer(calibrated, reference, lpips_real=0.001)
    assert scorer.calibration()["lpips_real"]["applied"] is True
    assert scorer.calibration()["confidence"]["applied"] is False  # no classifier given
    score = scorer.score(torch.full((1, 3, SIZE, SIZE), 0.5), diagnoses=["NV"], fsts=[2])[0]
    value = check(score, "lpips_real").value
    assert score.reasons == (f"lpips_real {value:.3f} > 0.001",)
    assert check(score, "memorization").reason == (
        "memorization not measurable: no training images in the reference"
    )
    assert check(score, "confidence").reason == "confidence not measurable: no classifier given"


def test_a_scorer_refuses_a_reference_it_cannot_compare_with(extractors, reference, tmp_path):
    with pytest.raises(ValueError, match="built at 64 px but candidates are 32 px"):
        Scorer(extractors, reference, ScoringConfig.build(SETTINGS), size=32)
    with pytest.raises(ValueError, match="holds up to 4 LPIPS images per skin type"):
        Scorer(extractors, reference, ScoringConfig(), size=SIZE)
    weights = tmp_path / "alexnet.pth"
    from torchvision.models import alexnet

    torch.save(alexnet(weights=None).state_dict(), weights)
    other = Extractors(
        inception=extractors.inception, lpips=lpips_metric(str(weights)), clip=extractors.clip
    )
    with pytest.raises(ValueError, match="built with lpips v0.1 alex \\(random weights"):
        make_scorer(other, reference)


@pytest.mark.parametrize(
    ("images", "diagnoses", "fsts", "match"),
    [
        (torch.rand(2, 3, SIZE, SIZE), ["MEL"], [2, 2], "2 images need 2 diagnoses"),
        (torch.rand(1, 3, SIZE, SIZE), ["MEL"], [7], r"skin types must be 1-6, got \[7\]"),
        (torch.rand(1, 3, SIZE, SIZE), ["OTHER"], [2], "not classes of the classifier"),
        (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), ["MEL"], [2], "float images"),
        (torch.rand(3, SIZE, SIZE), ["MEL"], [2], r"\(N, 3, H, W\)"),
    ],
)
def test_bad_score_calls_are_refused(extractors, reference, images, diagnoses, fsts, match):
    with pytest.raises(ValueError, match=match):
        make_scorer(extractors, reference).score(images, diagnoses=diagnoses, fsts=fsts)


# --- held-out real images and calibrated thresholds ---------------------------------------------


@pytest.fixture(scope="module")
def held_out_items(tmp_path_factory):
    """Twelve new real images each of FST II and V (in neither the reference nor training)."""
    folder = tmp_path_factory.mktemp("held-out")
    items = []
    for fst in (2, 5):
        for seed in range(100, 112):
            path = folder / f"held-{fst}-{seed}.png"
            dx = ("MEL", "NV", "OTHER")[seed % 3]  # OTHER: no classifier class
            draw_lesion("NV" if dx == "OTHER" else dx, fst, seed=seed, size=SIZE).save(path)
            items.append((str(path), fst, dx))
    return items


def test_held_out_images_are_measured_exactly_as_candidates(extractors, reference, held_out_items):
    scorer = make_scorer(extractors, reference)
    values, counts = measure_held_out(scorer, held_out_items, batch_size=5)
    assert counts == {2: 12, 5: 12}
    # Scored as candidates (the same images, the diagnoses the classifier knows).
    known = [(p, f, d) for p, f, d in held_out_items if d != "OTHER"]
    scores = scorer.score(
        torch.stack([load(p) for p, _, _ in known]),
        diagnoses=[d for _, _, d in known],
        fsts=[f for _, f, _ in known],
    )
    for fst in (2, 5):
        mine = [s for s, (_, f, _) in zip(scores, known, strict=True) if f == fst]
        rows = [
            i
            for i, (_, f, d) in enumerate(x for x in held_out_items if x[1] == fst)
            if d != "OTHER"
        ]
        for name, metric in (("fid", "fid"), ("lpips_real", "lpips_real")):
            assert len(values[name][fst]) == 12
            np.testing.assert_allclose(
                values[name][fst][rows], [s.metrics[metric] for s in mine], rtol=1e-5
            )
        # Confidence only where the classifier has the diagnosis.
        np.testing.assert_allclose(
            values["confidence"][fst], [s.metrics["confidence"] for s in mine], rtol=1e-5
        )
        assert len(values["memorization"][fst]) == 12
    training = [(reference.training_paths[0], 2, "MEL")]
    with pytest.raises(ValueError, match="must not be training images"):
        measure_held_out(scorer, training)


def test_calibrated_thresholds_come_from_the_pooled_held_out_values(
    extractors, reference, held_out_items, tmp_path
):
    values, counts = measure_held_out(make_scorer(extractors, reference), held_out_items)
    calibrated = dataclasses.replace(reference, held_out=values, held_out_counts=counts)
    scorer = make_scorer(
        extractors, calibrated, apply_uncalibrated=["fid", "lpips_real"], memorization=0.0
    )
    black = scorer.score(torch.zeros(1, 3, SIZE, SIZE), diagnoses=["MEL"], fsts=[5])[0]
    # 12 held-out images of FST V are too few: pooled outward (VI, IV, III hold none) up to
    # II, 24 values, percentile 95 of them.
    pooled = np.concatenate([values["fid"][2], values["fid"][5]])
    limit = np.percentile(pooled, 95)
    fid = check(black, "fid")
    assert not fid.passed and f"fid {fid.value:.3f} > {limit:.3f} (uncalibrated)" in black.reasons
    summary = filter_calibration(scorer, [2, 5], 95.0)
    rows = {(r["check"], r["fst"]): r for r in summary["checks"]}
    assert set(rows) == {
        (c, f) for c in ("lpips_real", "memorization", "confidence", "fid") for f in (2, 5)
    }
    assert rows[("fid", 5)]["threshold"] == pytest.approx(limit)
    assert rows[("fid", 5)]["source"] == (
        "percentile 95 of 24 held-out real images of FST II-VI (pooled)"
    )
    assert rows[("fid", 5)]["applied"] is True and rows[("fid", 5)]["calibrated"] is False
    assert 0 <= rows[("fid", 5)]["rejects_held_out"] <= 1
    assert rows[("memorization", 2)]["mode"] == "absolute"
    assert rows[("memorization", 2)]["rejects_held_out"] == 0.0  # no real image is below 0
    assert rows[("confidence", 2)]["threshold"] == 0.6
    # 16 of the 24 have a classifier diagnosis: too few, even pooled (absolute: no matter).
    assert summary["held_out_per_type"] == {"2": 12, "5": 12}
    # Saved and loaded, the reference keeps its held-out values and scores the same.
    calibrated.save(tmp_path / "ref")
    loaded = Reference.load(tmp_path / "ref", "cpu")
    assert loaded.held_out_counts == counts
    for name in values:
        for fst in values[name]:
            np.testing.assert_array_equal(loaded.held_out[name][fst], values[name][fst])
    again = make_scorer(
        extractors, loaded, apply_uncalibrated=["fid", "lpips_real"], memorization=0.0
    ).score(torch.zeros(1, 3, SIZE, SIZE), diagnoses=["MEL"], fsts=[5])[0]
    assert again.to_dict() == black.to_dict()
