"""Calibrated filter thresholds, checked by seeded simulation with known truth.

Per-image "FID" on 2,048-d Gaussian features: images drawn from the reference's own
distribution pass an absolute limit of 30 almost never (the distance of a same-distribution
image is ~sqrt(2048) ~ 45 at best, and far larger when the reference holds fewer images than
dimensions), while a limit calibrated at percentile p on held-out images of that distribution
lets about p % of them pass, and still rejects images from another distribution. Plus the
pooling of scarce skin types, the held-out draw and the out-of-sample rejection shares.
"""

import numpy as np
import pytest

from fairskin.generation.calibration import (
    HELD_OUT_PER_TYPE,
    MIN_HELD_OUT_PER_TYPE,
    calibration_pool,
    limit_from,
    pool_label,
    rejection_share,
    split_held_out,
    summarise,
)
from fairskin.generation.checks import Threshold, threshold_check
from fairskin.generation.reference import FID_EPS
from fairskin.generation.scoring_config import HIGHER_IS_WORSE, ScoringConfig
from fairskin.metrics.fid import feature_distances_to_reference
from fairskin.metrics.stats import StreamingGaussian

DIM = 2048


def draw(rng: np.random.Generator, n: int, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return mean + rng.standard_normal((n, DIM)) * scale


@pytest.fixture(scope="module")
def world():
    """One feature distribution: a random mean and a decaying spectrum (not isotropic)."""
    rng = np.random.default_rng(2026)
    mean = rng.normal(0.0, 1.0, DIM)
    scale = 1.0 / np.sqrt(1.0 + np.arange(DIM) / 64.0)
    return mean, scale


def simulate(world, n_reference: int, seed: int, percentile: float = 95.0) -> dict:
    """Reference, held-out and synthetic images from the same distribution (and one other)."""
    mean, scale = world
    rng = np.random.default_rng(seed)
    gaussian = StreamingGaussian(DIM)
    gaussian.update(draw(rng, n_reference, mean, scale))
    held_out = feature_distances_to_reference(
        draw(rng, HELD_OUT_PER_TYPE, mean, scale), gaussian, eps=FID_EPS
    )
    synthetic = feature_distances_to_reference(draw(rng, 1000, mean, scale), gaussian, eps=FID_EPS)
    shifted = feature_distances_to_reference(
        draw(rng, 500, mean + 0.5 * scale, scale * 1.3), gaussian, eps=FID_EPS
    )
    limit = limit_from(held_out, percentile, higher_is_worse=True)
    return {
        "held_out": held_out,
        "synthetic": synthetic,
        "limit": limit,
        "calibrated_pass": float((synthetic <= limit).mean()),
        "absolute_pass": float((synthetic <= 30.0).mean()),
        "other_pass": float((shifted <= limit).mean()),
    }


@pytest.mark.parametrize("n_reference", [300, 3000])
def test_same_distribution_images_pass_at_the_calibrated_rate_not_the_absolute_30(
    world, n_reference
):
    result = simulate(world, n_reference, seed=n_reference)
    # The old default: every image of the reference's own distribution is rejected.
    assert result["absolute_pass"] == 0.0
    assert result["synthetic"].min() > 40  # no image comes anywhere near 30
    if n_reference < DIM:  # a singular covariance: the ridge makes the distances huge
        assert np.median(result["synthetic"]) > 500
    # Calibrated at percentile 95 on 200 held-out images: about 95 % pass.
    assert 0.90 <= result["calibrated_pass"] <= 0.99
    # The same limit still rejects most images of another distribution.
    assert result["other_pass"] < 0.2


def test_the_filter_percentile_sets_the_pass_rate(world):
    at_80 = simulate(world, 300, seed=7, percentile=80.0)
    assert 0.72 <= at_80["calibrated_pass"] <= 0.88
    # The figure a batch reports for held-out real images agrees, measured out of sample.
    share = rejection_share(
        at_80["held_out"],
        mode="calibrated",
        percentile=80.0,
        higher_is_worse=True,
        limit=at_80["limit"],
        seed=1,
    )
    assert share is not None and 0.12 <= share <= 0.30


def test_a_calibrated_check_rejects_same_distribution_images_at_its_rate_end_to_end(world):
    """The threshold check itself, with the held-out values as its reference values."""
    result = simulate(world, 300, seed=11)
    config = ScoringConfig.build(None)
    outcomes = threshold_check(
        "fid",
        result["synthetic"].tolist(),
        config.fid,
        higher_is_worse=HIGHER_IS_WORSE["fid"],
        calibrated=True,
        reference=result["held_out"],
    )
    passed = np.mean([r.passed for r in outcomes])
    assert 0.90 <= passed <= 0.99
    old = threshold_check(
        "fid", result["synthetic"].tolist(), Threshold(30.0), higher_is_worse=True, calibrated=True
    )
    assert not any(r.passed for r in old)


def test_lower_is_worse_checks_take_the_complementary_percentile():
    values = np.arange(1, 101, dtype=float)
    # Memorization (a distance that must be at least the limit): percentile 95 lets 95 % pass.
    low = limit_from(values, 95.0, higher_is_worse=False)
    assert low == pytest.approx(np.percentile(values, 5))
    assert (values >= low).mean() == pytest.approx(0.95, abs=0.011)
    assert Threshold(None, "calibrated", 95.0).resolve(values, higher_is_worse=False) == low
    with pytest.raises(ValueError, match="percentile must be in"):
        limit_from(values, 0.0, higher_is_worse=True)
    with pytest.raises(ValueError, match="calibrated threshold needs the real images"):
        Threshold(None, "calibrated").resolve([])


def test_the_out_of_sample_share_is_not_true_by_construction():
    rng = np.random.default_rng(5)
    values = rng.normal(size=40)
    # In sample, percentile 100 would reject nothing by construction; cross-fitted it does.
    share = rejection_share(
        values, mode="calibrated", percentile=100.0, higher_is_worse=True, limit=None, seed=0
    )
    assert share is not None and 0 < share < 0.2
    in_sample = (values > limit_from(values, 100.0, higher_is_worse=True)).mean()
    assert in_sample == 0.0
    # Over many held-out draws the cross-fitted share averages about 100 - p.
    shares = [
        rejection_share(
            np.random.default_rng(s).normal(size=200),
            mode="calibrated",
            percentile=95.0,
            higher_is_worse=True,
            limit=None,
            seed=s,
        )
        for s in range(200)
    ]
    assert 0.045 <= float(np.mean(shares)) <= 0.065
    # An absolute limit is simply counted on every held-out value.
    assert rejection_share(
        np.array([1.0, 2.0, 3.0, 4.0]),
        mode="absolute",
        percentile=95.0,
        higher_is_worse=True,
        limit=2.5,
        seed=0,
    ) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("fst", "counts", "pool"),
    [
        (3, {3: 25}, (3,)),
        (5, {4: 30, 5: 10, 6: 12}, (5, 6)),  # V pools with VI first (ties go darker)
        (6, {4: 30, 5: 10, 6: 5}, (4, 5, 6)),  # VI with V, then IV
        (1, {1: 8, 2: 8, 3: 8}, (1, 2, 3)),
        (6, {1: 3, 6: 2}, (1, 2, 3, 4, 5, 6)),  # all six and still too few
    ],
)
def test_scarce_skin_types_are_pooled_with_their_nearest_types(fst, counts, pool):
    assert calibration_pool(fst, counts) == pool


def test_pool_labels():
    assert pool_label((5, 6)) == "FST V-VI"
    assert pool_label((2, 5)) == "FST II, V"
    assert pool_label((3,)) == "FST III"


def test_held_out_images_are_disjoint_from_training_and_the_reference_and_seeded():
    ids = list(range(100, 160))
    training = set(range(100, 130))
    reference, held = split_held_out(ids, training, seed=3, fst=5)
    assert not set(held) & training and not set(held) & set(reference)
    assert sorted(reference + held) == ids
    assert len(held) == 30  # all 30 non-training images, which is half of the 60
    assert split_held_out(ids, training, seed=3, fst=5) == (reference, held)
    # Never more than half of a type's images, never more than the cap.
    _, small = split_held_out(list(range(10)), set(), seed=3, fst=5)
    assert len(small) == 5
    _, capped = split_held_out(list(range(1000)), set(), seed=3, fst=5, cap=200)
    assert len(capped) == 200
    assert split_held_out(list(range(1000)), set(), seed=4, fst=5)[1] != capped
    # No image outside training: nothing is held out.
    assert split_held_out(ids[:30], training, seed=3, fst=5) == (ids[:30], [])


def test_the_summary_gives_every_check_its_limit_source_and_held_out_share():
    rng = np.random.default_rng(0)
    held_out = {
        "fid": {5: rng.normal(100, 10, 12), 6: rng.normal(100, 10, 12), 2: rng.normal(90, 5, 3)},
        "lpips_real": {5: rng.uniform(0.3, 0.5, 12)},
    }
    config = ScoringConfig.build({"lpips_real": 0.45, "confidence": 0.6})
    applied = {
        name: {"calibrated": True, "applied": True, "extractor": "x"}
        for name in ("fid", "lpips_real", "memorization", "confidence")
    }
    summary = summarise(
        thresholds={"fid": config.fid, "lpips_real": config.lpips_real},
        higher_is_worse=HIGHER_IS_WORSE,
        held_out=held_out,
        held_out_counts={2: 3, 5: 12, 6: 12},
        reference_limits={},
        applied=applied,
        fsts=[2, 5],
        percentile=95.0,
        seed=1,
    )
    rows = {(r["check"], r["fst"]): r for r in summary["checks"]}
    fid5 = rows[("fid", 5)]
    assert fid5["pool"] == [5, 6] and fid5["held_out"] == 24 and fid5["status"] == "ok"
    assert fid5["source"] == "percentile 95 of 24 held-out real images of FST V-VI (pooled)"
    pooled = np.concatenate([held_out["fid"][5], held_out["fid"][6]])
    assert fid5["threshold"] == pytest.approx(np.percentile(pooled, 95))
    assert 0 <= fid5["rejects_held_out"] <= 0.25 and "cross-fitting" in fid5["share_method"]
    # FST II pools outward until 20 values: II, III (0), I (0), IV (0), V (12) -> 15, then VI.
    fid2 = rows[("fid", 2)]
    assert fid2["pool"] == [1, 2, 3, 4, 5, 6] and fid2["held_out"] == 27
    lpips5 = rows[("lpips_real", 5)]
    assert lpips5["mode"] == "absolute" and lpips5["threshold"] == 0.45
    assert lpips5["rejects_held_out"] == pytest.approx((held_out["lpips_real"][5] > 0.45).mean())
    # Too few even with every type pooled: said, and no limit.
    lpips2 = rows[("lpips_real", 2)]
    assert lpips2["mode"] == "absolute"  # an absolute limit needs no held-out images
    none = summarise(
        thresholds={"fid": config.fid},
        higher_is_worse=HIGHER_IS_WORSE,
        held_out={"fid": {5: np.ones(4)}},
        held_out_counts={5: 4},
        reference_limits={},
        applied=applied,
        fsts=[5],
        percentile=95.0,
        seed=1,
    )
    row = none["checks"][0]
    assert row["status"] == "too few held-out images" and row["threshold"] is None
    assert row["rejects_held_out"] is None and none["too_few"] == [{"check": "fid", "fst": 5}]
    assert f"fewer than the {MIN_HELD_OUT_PER_TYPE}" in row["source"]
