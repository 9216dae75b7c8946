"""The batch report: per-type Fréchet/kernel distances from streamed features, excess FID at
equal counts, diversity per cell, and success criteria that refuse to judge uncalibrated values."""

import numpy as np
import pytest

from fairskin.generation.fst_verdicts import EXCESS_REPEATS, MIN_EQUAL_N
from fairskin.generation.report import KEEP_PER_FST, AcceptedImage, batch_report
from fairskin.metrics import StreamingGaussian, fid_from_features, mean_pairwise_cosine_distance
from fairskin.metrics.excess_fid import excess_fid

CALIBRATED = {
    name: {"calibrated": True, "label": name}
    for name in ("inception", "clip", "lpips", "classifier")
}


def accepted(rng, fst, n, *, shift=0.0, dx="MEL", dim=8, lpips=0.1, confidence=0.9):
    return [
        AcceptedImage(
            dx,
            fst,
            rng.normal(size=dim) + shift,
            rng.normal(size=4),
            {"lpips_real": lpips, "confidence": confidence},
        )
        for _ in range(n)
    ]


def reference_for(rng, fsts, n=40, dim=8):
    gaussians, rows = {}, {}
    for fst in fsts:
        x = rng.normal(size=(n, dim))
        g = StreamingGaussian(dim)
        g.update(x)
        gaussians[fst], rows[fst] = g, x
    return gaussians, rows


def test_per_type_distances_equal_the_direct_computation_and_judge_at_equal_counts():
    rng = np.random.default_rng(0)
    images = accepted(rng, 5, 30, shift=0.5) + accepted(rng, 6, 12, shift=1.0)
    gaussians, rows = reference_for(rng, [5, 6])
    report = batch_report(
        images, reference=gaussians, reference_features=rows, provenance=CALIBRATED, kid_subsets=20
    )
    by_fst = {r["fst"]: r for r in report["fst"]}
    ours5 = np.stack([i.inception for i in images if i.fst == 5])
    ours6 = np.stack([i.inception for i in images if i.fst == 6])
    assert by_fst[5]["n"] == 30 and by_fst[6]["n"] == 12
    assert by_fst[5]["fid"] == pytest.approx(fid_from_features(ours5, rows[5]), rel=1e-6)
    # Each type at its own equal count N = min(synthetic, real // 2): 20 for type 5 (40 reals),
    # 12 for type 6, which is below the minimum and so not measurable, not failed.
    expected5 = excess_fid(ours5, rows[5], repeats=EXCESS_REPEATS, seed=[0, 5])
    assert by_fst[5]["excess"] == pytest.approx(expected5.to_dict())
    assert by_fst[5]["figure"] == expected5.median and expected5.n == 20
    assert by_fst[6]["excess"]["n"] == 12 < MIN_EQUAL_N
    assert by_fst[6]["status"] == "not measurable" and "below 20" in by_fst[6]["why"]
    assert by_fst[6]["fid"] > by_fst[5]["fid"]  # the larger shift is farther from the reals
    assert by_fst[6]["kid"] > by_fst[5]["kid"]
    assert report["overall"]["n"] == 42
    assert report["overall"]["fid"] == pytest.approx(
        fid_from_features(np.concatenate([ours5, ours6]), np.concatenate([rows[5], rows[6]])),
        rel=1e-6,
    )


def test_streamed_statistics_give_the_same_fid_beyond_the_kept_rows():
    rng = np.random.default_rng(1)
    n = KEEP_PER_FST + 100
    images = accepted(rng, 4, n, shift=0.3, dim=6)
    gaussians, rows = reference_for(rng, [4], n=50, dim=6)
    report = batch_report(
        images, reference=gaussians, reference_features=rows, provenance=CALIBRATED, kid_subsets=5
    )
    ours = np.stack([i.inception for i in images])
    assert report["fst"][0]["fid"] == pytest.approx(fid_from_features(ours, rows[4]), rel=1e-7)


def test_diversity_lpips_and_confidence_summaries():
    rng = np.random.default_rng(2)
    images = accepted(rng, 5, 5, dx="MEL", lpips=0.12) + accepted(rng, 5, 1, dx="NV")
    gaussians, rows = reference_for(rng, [5])
    report = batch_report(
        images, reference=gaussians, reference_features=rows, provenance=CALIBRATED, kid_subsets=5
    )
    mel = np.stack([i.clip for i in images if i.diagnosis == "MEL"])
    assert report["diversity"]["MEL:5"] == pytest.approx(mean_pairwise_cosine_distance(mel))
    assert report["diversity"]["NV:5"] is None  # one image has no pairs
    assert report["lpips"]["n"] == 6 and report["lpips"]["median"] == pytest.approx(0.12)
    assert report["confidence"]["mean"] == pytest.approx(0.9)


def test_criteria_are_met_not_met_or_not_measurable():
    rng = np.random.default_rng(3)
    images = accepted(rng, 6, 20, lpips=0.2, confidence=0.95)
    gaussians, rows = reference_for(rng, [6])
    report = batch_report(
        images, reference=gaussians, reference_features=rows, provenance=CALIBRATED, kid_subsets=5
    )
    status = {c["name"]: c["status"] for c in report["criteria"]}
    assert status["FID FST 6"] == "met"  # same distribution: far below 25
    assert status["LPIPS"] == "not met"  # 0.2 is not < 0.15
    assert status["classifier confidence"] == "met"
    limits = {c["name"]: c["limit"] for c in report["criteria"]}
    assert limits["FID FST 6"] == 25.0

    random_inception = {**CALIBRATED, "inception": {"calibrated": False, "label": "random"}}
    no_classifier = {k: v for k, v in random_inception.items() if k != "classifier"}
    report = batch_report(
        images,
        reference=gaussians,
        reference_features=rows,
        provenance=no_classifier,
        kid_subsets=5,
    )
    criteria = {c["name"]: c for c in report["criteria"]}
    assert criteria["FID FST 6"]["status"] == "not measurable"
    assert "uncalibrated" in criteria["FID FST 6"]["why"]
    assert criteria["classifier confidence"]["status"] == "not measurable"
    assert "no confidence model" in criteria["classifier confidence"]["why"]
