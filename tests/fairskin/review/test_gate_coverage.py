"""The version-2 gate's bounds cover this panel's judgement, checked by simulation.

Each simulated study has 3 raters scoring every image 1-7 from a known latent model:
score = clip(round(MU + image effect + rater offset + noise), 1, 7), image effect ~ N(0, SU),
noise ~ N(0, SE), the rater offsets drawn once per study (the panel is fixed, the images are the
sample). The truth for a panel is computed exactly by integrating over the image effect (given
it, the raters are independent); a test checks that against a very large image sample. The
model sits near the default limits (mean about 5.0, median share about 0.9, low share about
0.1), where a bound that undercovers would let studies at the limit through.

Time budget: about 15 s on the development machine (2 shared cores), at most 60 s; everything
is vectorised over studies and the gate's own bound functions (`fairskin.review.bounds`) are
what is tested, without any bootstrap.
"""

import numpy as np
import pytest
from scipy.stats import norm

from fairskin.review.bounds import gate_bounds
from fairskin.review.gate import GateCriteria, gate_report
from fairskin.review.study import Rating, ReviewItem

MU, SU, SE = 5.0, 1.0, 1.0
OFFSET_SD = 0.6
N_STUDIES = 500
NOMINAL_MISS = 0.025
ALLOWED_MISS = NOMINAL_MISS + 0.02


def panel_truth(offsets):
    """(mean rating, share with median >= 4, share with a rating below 3) of the image
    population for each panel of rater offsets (studies x 3)."""
    effect = np.linspace(-8 * SU, 8 * SU, 1601)
    weight = norm.pdf(effect, 0, SU)
    weight /= weight.sum()
    location = MU + effect[None, None, :] + offsets[:, :, None]  # studies, raters, effects
    # P(score <= k), k = 1..7, for each rater given the image effect.
    below = norm.cdf((np.arange(1.5, 7.0)[None, None, None, :] - location[..., None]) / SE)
    cdf = np.concatenate([below, np.ones(below.shape[:-1] + (1,))], axis=-1)
    pmf = np.diff(cdf, axis=-1, prepend=0.0)
    mean = ((pmf * np.arange(1, 8)).sum(-1).mean(1) * weight).sum(-1)
    q1, q2, q3 = np.moveaxis(1 - cdf[..., 2], 1, 0)  # P(score >= 4) per rater
    median_share = ((q1 * q2 + q1 * q3 + q2 * q3 - 2 * q1 * q2 * q3) * weight).sum(-1)
    low_share = ((1 - np.prod(1 - cdf[..., 1], axis=1)) * weight).sum(-1)  # P(any score <= 2)
    return mean, median_share, low_share


def simulate(n_studies, n_images, offset_sd, seed):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, offset_sd, (n_studies, 3))
    effect = rng.normal(0, SU, (n_studies, 1, n_images))
    noise = rng.normal(0, SE, (n_studies, 3, n_images))
    scores = np.clip(np.rint(MU + effect + offsets[:, :, None] + noise), 1, 7)
    return scores, offsets


def miss_rates(n_images, offset_sd, seed):
    """How often the bound the gate judges on misses the truth: the lower bound of (a) and (b)
    above it, the upper bound of (c) below it."""
    scores, offsets = simulate(N_STUDIES, n_images, offset_sd, seed)
    truth = panel_truth(offsets)
    bounds = gate_bounds(scores, median_at_least=4, low_below=3)
    return {
        "mean": float(np.mean(bounds["mean"][1] > truth[0])),
        "median_share": float(np.mean(bounds["median_share"][1] > truth[1])),
        "low_share": float(np.mean(bounds["low_share"][2] < truth[2])),
    }


def test_the_panel_truth_matches_a_very_large_image_sample():
    scores, offsets = simulate(1, 400_000, OFFSET_SD, seed=99)
    truth = panel_truth(offsets)
    estimates = gate_bounds(scores, median_at_least=4, low_below=3)
    for index, name in enumerate(("mean", "median_share", "low_share")):
        assert estimates[name][0][0] == pytest.approx(truth[index][0], abs=0.006), name


@pytest.mark.slow
@pytest.mark.parametrize("n_images", [50, 500])
@pytest.mark.parametrize("offset_sd", [0.0, OFFSET_SD], ids=["no-offsets", "rater-offsets"])
def test_the_bounds_the_gate_judges_on_miss_at_most_nominal_plus_two_points(n_images, offset_sd):
    rates = miss_rates(n_images, offset_sd, seed=n_images + int(offset_sd * 10))
    for name, rate in rates.items():
        assert rate <= ALLOWED_MISS, (name, rates)


def test_the_gate_report_uses_these_bounds():
    scores, _ = simulate(1, 60, OFFSET_SD, seed=5)
    items = [ReviewItem(f"s{i}", "synthetic", "mel", 1) for i in range(60)]
    ratings = [
        Rating(rater, f"s{i}", int(scores[0, r, i]), 5.0, i)
        for r, rater in enumerate("abc")
        for i in range(60)
    ]
    gate = gate_report(
        items, ratings, GateCriteria(use_interval=True), raters=dict.fromkeys("abc", True)
    )["gate"]
    bounds = gate_bounds(scores[0], median_at_least=4, low_below=3)
    for name, (estimate, low, high) in bounds.items():
        assert gate[name]["estimate"] == pytest.approx(float(estimate))
        assert gate[name]["ci_low"] == pytest.approx(float(low))
        assert gate[name]["ci_high"] == pytest.approx(float(high))
    assert gate["low_share"]["judged_on"] == "ci_high"
    assert gate["mean"]["judged_on"] == gate["median_share"]["judged_on"] == "ci_low"


if __name__ == "__main__":  # the table of miss rates
    for n in (50, 500):
        for sd in (0.0, OFFSET_SD):
            print(n, sd, miss_rates(n, sd, seed=n + int(sd * 10)))
