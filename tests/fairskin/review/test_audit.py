"""The blinding audit's permutation test (its size under the null, its power on a planted
signal), its split of encoding failures from content statistics, and the pixel statistics."""

import io

import numpy as np
import pytest
from PIL import Image

from fairskin.review.audit import blinding_audit, permutation_auc
from fairskin.review.blinding import DEFAULT_QUALITY, blinded_derivative
from fairskin.review.signals import decode_pixels, pixel_signals

ALPHA = 0.01


def origins_for(n_real: int, n_synthetic: int) -> list[str]:
    return ["real"] * n_real + ["synthetic"] * n_synthetic


@pytest.mark.parametrize(("n_real", "n_synthetic"), [(8, 24), (30, 90)])
def test_null_rejection_rate_is_at_most_alpha(n_real, n_synthetic):
    # Both origins from one distribution, 400 seeded datasets: the share with p < alpha must
    # stay within alpha plus a binomial tolerance (sd of a 1 % rate over 400 is 0.5 %).
    rng = np.random.default_rng(2026)
    origins = origins_for(n_real, n_synthetic)
    rejections = 0
    null_means = []
    for dataset in range(400):
        scores = rng.normal(size=n_real + n_synthetic)
        result = permutation_auc(origins, scores, n_permutations=2000, seed=dataset)
        rejections += result["p_value"] < ALPHA
        null_means.append(result["null_mean"])
    assert rejections / 400 <= ALPHA + 0.015
    # The folded statistic's null mean sits above 0.5, further in the smaller study.
    assert np.mean(null_means) > 0.52


def test_null_rejection_rate_with_ties():
    # Integer scores (many ties, like byte lengths of a few sizes) keep the test valid too.
    rng = np.random.default_rng(7)
    origins = origins_for(10, 30)
    rejections = sum(
        permutation_auc(origins, rng.integers(0, 4, size=40), n_permutations=1000, seed=i)[
            "p_value"
        ]
        < ALPHA
        for i in range(300)
    )
    assert rejections / 300 <= ALPHA + 0.02


def test_a_planted_signal_is_detected():
    rng = np.random.default_rng(3)
    origins = origins_for(20, 60)
    scores = np.r_[rng.normal(1.2, 1, 20), rng.normal(0, 1, 60)]
    result = permutation_auc(origins, scores, seed=1)
    assert result["value"] > 0.75 and result["p_value"] < ALPHA
    assert result["auc"] > 0.5  # real is the positive class: real scored higher


def test_perfect_separation_in_a_tiny_study_cannot_reach_alpha():
    # Two real and four synthetic files: 15 ways to choose the real ones, 2 of them perfectly
    # separated, so p is about 2/15 even for AUC 1 -- the audit does not cry wolf on tiny studies.
    result = permutation_auc(origins_for(2, 4), [9, 8, 1, 2, 3, 4], seed=0)
    assert result["value"] == 1.0
    assert 0.1 < result["p_value"] < 0.2


def test_constant_scores_carry_no_information():
    result = permutation_auc(origins_for(5, 5), [7] * 10)
    assert result["value"] == 0.5 and result["p_value"] == 1.0


def test_permutation_auc_is_seeded_and_needs_both_origins():
    scores = list(np.random.default_rng(0).normal(size=30))
    origins = origins_for(10, 20)
    assert permutation_auc(origins, scores, seed=4) == permutation_auc(origins, scores, seed=4)
    assert permutation_auc(["real"] * 3, [1, 2, 3])["why"] == "needs both real and synthetic files"
    with pytest.raises(ValueError, match="same length"):
        permutation_auc(origins, scores[:5])


def file(origin, size, **signals):
    return {
        "origin": origin,
        "bytes": size,
        "payload_bytes": size - 57,
        "width": 512,
        "height": 512,
        "format": "PNG",
        "headers": {"Content-Type": "image/png"},
        "signals": signals,
    }


def test_encoding_signals_fail_and_content_signals_are_only_reported():
    rng = np.random.default_rng(11)
    files = [
        file("real" if i < 20 else "synthetic", 787_072, blockiness=b, sharpness=s)
        for i, (b, s) in enumerate(
            zip(
                np.r_[rng.normal(1.5, 0.1, 20), rng.normal(1.0, 0.1, 40)],
                np.r_[rng.normal(50, 5, 20), rng.normal(80, 5, 40)],
                strict=True,
            )
        )
    ]
    audit = blinding_audit(files)
    assert audit["alpha"] == 0.01
    assert audit["signals"]["bytes"]["p_value"] == 1.0 and audit["size_auc"]["value"] == 0.5
    assert audit["signals"]["blockiness"]["failed"]
    sharpness = audit["signals"]["sharpness"]
    assert sharpness["kind"] == "content" and sharpness["value"] == 1.0 and not sharpness["failed"]
    assert len(audit["encoding_failures"]) == 1
    assert audit["encoding_failures"][0].startswith("8x8 grid blockiness separates")


def test_a_clean_study_has_no_encoding_failures_and_varying_lengths_fail():
    rng = np.random.default_rng(5)
    clean = [
        file("real" if i < 15 else "synthetic", 787_072, blockiness=b)
        for i, b in enumerate(rng.normal(1.2, 0.1, 45))
    ]
    assert blinding_audit(clean)["encoding_failures"] == []
    leaky = [
        file(f["origin"], 38_000 + i if f["origin"] == "synthetic" else 30_000 + i)
        for i, f in enumerate(clean)
    ]
    failures = blinding_audit(leaky)["encoding_failures"]
    assert [f.split(" separates")[0] for f in failures] == ["byte length", "payload length"]


def test_structural_differences_are_encoding_failures():
    files = [file("real", 10), file("synthetic", 10) | {"format": "JPEG", "width": 640}]
    failures = blinding_audit(files)["encoding_failures"]
    assert any(f.startswith("dimensions differ") for f in failures)
    assert any(f.startswith("formats differ") for f in failures)


def encode(image, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_pixel_signals_see_a_jpeg_grid_and_a_second_quantization():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 2, (256, 256, 3)), axis=1)
    pixels = np.clip(smooth - smooth.mean() + 128, 0, 255).astype(np.uint8)
    lossless = pixel_signals(pixels, DEFAULT_QUALITY)
    once = pixel_signals(decode_pixels(encode(Image.fromarray(pixels), "JPEG", quality=60)), 60)
    twice_source = encode(Image.fromarray(pixels), "JPEG", quality=50)
    twice = encode(Image.open(io.BytesIO(twice_source)), "JPEG", quality=75)
    twice_signals = pixel_signals(decode_pixels(twice), 75)
    once_75 = pixel_signals(decode_pixels(encode(Image.fromarray(pixels), "JPEG", quality=75)), 75)
    assert once["blockiness"] > lossless["blockiness"]
    assert twice_signals["double_compression"] > once_75["double_compression"]
    assert set(lossless) == {"blockiness", "double_compression", "sharpness", "high_frequency"}


def test_served_files_feed_the_audit():
    sources = [encode(Image.new("RGB", (40, 40), (20 * i, 90, 120)), "PNG") for i in range(6)]
    served = [blinded_derivative(s, size=64) for s in sources]
    signals = [pixel_signals(decode_pixels(data), DEFAULT_QUALITY) for data in served]
    assert all(np.isfinite(list(s.values())).all() for s in signals)
