"""Review statistics against published worked examples and cases counted by hand: Krippendorff's
alpha (Krippendorff 2011), ICCs (Shrout & Fleiss 1979), AUC and Mann-Whitney, the gate criteria
at their boundaries, the two-level bootstrap, rater behaviour and the blinding audit."""

import json
import math

import numpy as np
import pytest

from fairskin.review.agreement import intraclass_correlations, krippendorff_alpha_ordinal
from fairskin.review.audit import blinding_audit
from fairskin.review.gate import GateCriteria, gate_report
from fairskin.review.study import Rating, ReviewItem

# pingouin 0.7 calls a pandas method that pandas 3.1 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")

RATERS = ("a", "b", "c")
V1 = GateCriteria(version=1)


def study(rows, raters=RATERS, seconds=5.0):
    """rows: (item id, origin, fst, one score per rater, None where unrated)."""
    items, ratings = [], []
    position = dict.fromkeys(raters, 0)
    for item_id, origin, fst, scores in rows:
        items.append(ReviewItem(item_id, origin, "mel", fst))
        for rater, score in zip(raters, scores, strict=True):
            if score is not None:
                ratings.append(Rating(rater, item_id, score, seconds, position[rater]))
                position[rater] += 1
    return items, ratings


def report(items, ratings, criteria=None, *, raters=RATERS, unfinished=(), n_boot=0, **kwargs):
    result = gate_report(
        items,
        ratings,
        criteria or GateCriteria(),
        raters={r: r not in unfinished for r in raters},
        n_boot=n_boot,
        **kwargs,
    )
    # Plain JSON: no NaN, no numpy scalars, no tuples, string keys; it survives a round trip.
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    return result


def synthetic_rows(scores_per_item, fst=1, prefix="s"):
    return [(f"{prefix}{i}", "synthetic", fst, scores) for i, scores in enumerate(scores_per_item)]


def random_study(n_raters, n_items, seed):
    """Ratings with a bias per rater and an effect per image, like a real panel."""
    rng = np.random.default_rng(seed)
    rater_bias = rng.normal(0, 0.6, n_raters)
    image_effect = rng.normal(0, 0.8, n_items)
    rows = []
    for i in range(n_items):
        scores = np.clip(
            np.rint(5.3 + image_effect[i] + rater_bias + rng.normal(0, 0.7, n_raters)), 1, 7
        )
        rows.append((f"s{i}", "synthetic", 1 + i % 6, tuple(int(s) for s in scores)))
    return rows


# --- Krippendorff's alpha ----------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with missing
# values: observers A-D (rows) x units 1-12 (columns).
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]
)


def test_ordinal_alpha_of_krippendorffs_worked_example():
    # Published ordinal alpha for these data: 0.815 (nominal 0.743, interval 0.849, ratio 0.797).
    # Unit 12 has a single value, so 11 units are pairable.
    result = krippendorff_alpha_ordinal(KRIPPENDORFF_2011)
    assert result["value"] == pytest.approx(0.815, abs=5e-4)
    assert (result["n_raters"], result["n_items"], result["why"]) == (4, 11, None)


def test_ordinal_alpha_counted_by_hand():
    # Two raters, three units: (1, 1), (2, 3), (3, 3).
    # Coincidences: o11 = 2, o23 = o32 = 1, o33 = 2; marginals n1 = 2, n2 = 1, n3 = 3, n = 6.
    # Ordinal distance d(c, k) = (sum of n_g for g from c to k - (n_c + n_k) / 2) ** 2:
    #   d12 = (3 - 1.5)^2 = 2.25, d23 = (4 - 2)^2 = 4, d13 = (6 - 2.5)^2 = 12.25.
    # D_o = (o23 d23 + o32 d32) / n = 8 / 6.
    # D_e = 2 (n1 n2 d12 + n1 n3 d13 + n2 n3 d23) / (n (n - 1)) = 2 (4.5 + 73.5 + 12) / 30 = 6.
    # alpha = 1 - D_o / D_e = 1 - 8 / 36 = 7 / 9.
    result = krippendorff_alpha_ordinal(np.array([[1, 2, 3], [1, 3, 3]]))
    assert result["value"] == pytest.approx(7 / 9)


def test_ordinal_alpha_is_ordinal_not_interval():
    # Ordinal distances depend on how many values lie between two scores, not on their spacing:
    # the interval alpha of the example is 0.849, the ordinal one 0.815.
    assert krippendorff_alpha_ordinal(KRIPPENDORFF_2011)["value"] != pytest.approx(0.849, abs=1e-2)


def test_report_alpha_uses_scored_ratings_of_all_items():
    raters = tuple("ABCD")
    rows = [
        (
            f"u{unit + 1}",
            "synthetic" if unit % 2 else "real",
            1 + unit % 6,
            tuple(None if np.isnan(v) else int(v) for v in KRIPPENDORFF_2011[:, unit]),
        )
        for unit in range(12)
    ]
    items, ratings = study(rows, raters=raters)
    # A retest that disagrees and a warm-up must not enter the alpha.
    ratings += [Rating("A", "u1", 7, 3.0, 100, "retest"), Rating("A", "w", 7, 3.0, 101, "warmup")]
    alpha = report(items, ratings, raters=raters)["agreement"]["krippendorff_alpha_ordinal"]
    assert alpha["value"] == pytest.approx(0.815, abs=5e-4)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([[1, 2, 3]], "at least 2 raters"),
        ([[4, 4, 4], [4, 4, np.nan]], "identical"),
        ([[1, np.nan], [np.nan, 2]], "no item was rated by 2"),
    ],
)
def test_ordinal_alpha_undefined_cases_say_why(data, why):
    result = krippendorff_alpha_ordinal(np.array(data, dtype=float))
    assert result["value"] is None
    assert why in result["why"]


# --- ICC -----------------------------------------------------------------------------------------

# Shrout & Fleiss (1979), Table 2: 6 targets (rows) x 4 judges (columns).
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def mean_squares(x):
    """Two-way ANOVA without replication: between targets, between judges, residual."""
    n, k = x.shape
    grand = x.mean()
    ss_targets = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_judges = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_residual = ((x - grand) ** 2).sum() - ss_targets - ss_judges
    return ss_targets / (n - 1), ss_judges / (k - 1), ss_residual / ((n - 1) * (k - 1))


def test_icc_of_shrout_and_fleiss_table():
    # Published (Table 4): ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71; ICC(1,4) .44, ICC(2,4) .62,
    # ICC(3,4) .91.
    result = intraclass_correlations(SHROUT_FLEISS)
    published = {
        "ICC1": 0.17,
        "ICC2": 0.29,
        "ICC3": 0.71,
        "ICC1k": 0.44,
        "ICC2k": 0.62,
        "ICC3k": 0.91,
    }
    for name, value in published.items():
        assert result[name]["value"] == pytest.approx(value, abs=0.005), name
    assert (result["n_items"], result["n_raters"], result["why"]) == (6, 4, None)


def test_icc2_interval_follows_shrout_and_fleiss_formula():
    from scipy.stats import f

    x = SHROUT_FLEISS
    n, k = x.shape
    bms, jms, ems = mean_squares(x)
    icc = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    assert icc == pytest.approx(0.29, abs=0.005)
    # Shrout & Fleiss (1979), the approximate interval for ICC(2,1) (Satterthwaite df).
    fj = jms / ems
    a = n * (1 + (k - 1) * icc) - k * icc
    v = (k - 1) * (n - 1) * (k * icc * fj + a) ** 2 / ((n - 1) * k**2 * icc**2 * fj**2 + a**2)
    f_star, f_star2 = f.ppf(0.975, n - 1, v), f.ppf(0.975, v, n - 1)
    low = n * (bms - f_star * ems) / (f_star * (k * jms + (k * n - k - n) * ems) + n * bms)
    high = n * (f_star2 * bms - ems) / (k * jms + (k * n - k - n) * ems + n * f_star2 * bms)
    result = intraclass_correlations(x)["ICC2"]
    # pingouin rounds its intervals to 2 decimals.
    assert result["ci_low"] == pytest.approx(low, abs=0.006)
    assert result["ci_high"] == pytest.approx(high, abs=0.006)
    assert result["ci_low"] < result["value"] < result["ci_high"]
    # The mean of k raters (Spearman-Brown of both ends).
    k_result = intraclass_correlations(x)["ICC2k"]
    assert k_result["ci_low"] == pytest.approx(k * low / (1 + (k - 1) * low), abs=0.006)
    assert k_result["ci_high"] == pytest.approx(k * high / (1 + (k - 1) * high), abs=0.006)


def test_report_icc_uses_only_items_every_rater_scored():
    complete = [(6, 5, 4), (2, 3, 3), (7, 6, 6), (4, 4, 2), (5, 3, 4)]
    rows = synthetic_rows(complete) + [("gap", "synthetic", 1, (1, 7, None))]
    items, ratings = study(rows)
    icc = report(items, ratings)["agreement"]["icc"]
    bms, jms, ems = mean_squares(np.array(complete, dtype=float))
    n, k = 5, 3
    assert icc["n_items"] == 5
    assert icc["ICC2"]["value"] == pytest.approx(
        (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    )
    assert icc["ICC2k"]["value"] == pytest.approx((bms - ems) / (bms + (jms - ems) / n))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([[1], [2], [3]], "at least 2 raters"),
        ([[1, 2, 3]], "at least 2 items"),
        ([[5, 5], [5, 5], [5, 5]], "identical"),
    ],
)
def test_icc_undefined_cases_say_why(data, why):
    result = intraclass_correlations(np.array(data, dtype=float))
    assert result["ICC2"]["value"] is None and result["ICC2k"]["value"] is None
    assert why in result["why"]


def test_icc_rejects_missing_values():
    with pytest.raises(ValueError, match="complete"):
        intraclass_correlations(np.array([[1, np.nan], [2, 3]]))


# --- synthetic vs real: AUC and Mann-Whitney -----------------------------------------------------


def test_auc_and_mann_whitney_counted_by_hand_with_ties():
    rows = [
        ("s1", "synthetic", 1, (2, 2)),
        ("s2", "synthetic", 1, (4, 4)),
        ("s3", "synthetic", 1, (3, 5)),
        ("r1", "real", 1, (4, 4)),
        ("r2", "real", 1, (6, 6)),
    ]
    items, ratings = study(rows, raters=("a", "b"))
    result = report(items, ratings, raters=("a", "b"))["synthetic_vs_real"]
    # Per-image means: synthetic 2, 4, 4; real 4, 6. Of the 6 (real, synthetic) pairs the real
    # image is higher in 4 and tied in 2: AUC = (4 + 2 / 2) / 6.
    assert result["auc_pooled"]["value"] == pytest.approx(5 / 6)
    # Rater a: synthetic 2, 4, 3 vs real 4, 6 -> 1 + .5 + 1 + 3 = 5.5 of 6.
    # Rater b: synthetic 2, 4, 5 vs real 4, 6 -> 1 + .5 + 0 + 3 = 4.5 of 6.
    assert result["auc_by_rater"]["a"]["value"] == pytest.approx(5.5 / 6)
    assert result["auc_by_rater"]["b"]["value"] == pytest.approx(4.5 / 6)
    # U of the synthetic sample = pairs where synthetic is higher + half the ties = 0 + 1.
    test = result["mann_whitney"]
    assert test["u_synthetic"] == 1.0
    # Ties -> normal approximation with tie and continuity corrections. Pooled values
    # 2, 4, 4, 4, 6 have one tie group of 3: var = n1 n2 / 12 * (N + 1 - (3^3 - 3) / (N (N - 1))).
    variance = 3 * 2 / 12 * (6 - 24 / 20)
    z = (abs(1 - 3 * 2 / 2) - 0.5) / math.sqrt(variance)
    assert test["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    # Rating-level means: synthetic (2+2+4+4+3+5)/6, real (4+4+6+6)/4.
    assert result["mean_difference"]["estimate"] == pytest.approx(20 / 6 - 5)


def test_perfect_separation_has_auc_one_and_exact_p():
    rows = [
        ("s1", "synthetic", 1, (1,)),
        ("s2", "synthetic", 1, (2,)),
        ("s3", "synthetic", 1, (3,)),
        ("r1", "real", 1, (5,)),
        ("r2", "real", 1, (6,)),
    ]
    items, ratings = study(rows, raters=("a",))
    result = report(items, ratings, raters=("a",))["synthetic_vs_real"]
    assert result["auc_pooled"]["value"] == 1.0
    assert result["auc_by_rater"]["a"]["value"] == 1.0
    # No ties: exact test. U = 0 is the most extreme of C(5, 2) = 10 equally likely
    # arrangements, two-sided p = 2 / 10.
    assert result["mann_whitney"]["u_synthetic"] == 0.0
    assert result["mann_whitney"]["p_value"] == pytest.approx(0.2)


def test_mean_difference_interval_covers_the_estimate():
    rows = random_study(3, 30, seed=4) + [
        (f"r{i}", "real", 1 + i % 6, s)
        for i, (_, _, _, s) in enumerate(random_study(3, 12, seed=5))
    ]
    items, ratings = study(rows)
    difference = report(items, ratings, n_boot=200)["synthetic_vs_real"]["mean_difference"]
    assert difference["ci_low"] < difference["estimate"] < difference["ci_high"]


# --- gate criteria -----------------------------------------------------------------------------


def passed(result):
    gate = result["gate"]
    return {
        name: gate[name]["passed"]
        for name in ("mean", "median_share", "low_share", "raters_finished")
    } | {"all": gate["passed"]}


def test_mean_of_exactly_five_fails_and_only_scored_synthetic_ratings_count():
    rows = synthetic_rows([(5, 5, 5)] * 10) + [("r1", "real", 1, (1, 1, 1))]
    items, ratings = study(rows)
    # Warm-up and retest ratings of synthetic images never count toward the gate.
    ratings += [Rating("a", "s0", 1, 3.0, 50, "retest"), Rating("a", "s0", 1, 3.0, 51, "warmup")]
    result = report(items, ratings)
    assert result["gate"]["mean"]["estimate"] == 5.0
    assert result["gate"]["low_share"]["estimate"] == 0.0
    assert passed(result) == {
        "mean": False,
        "median_share": True,
        "low_share": True,
        "raters_finished": True,
        "all": False,
    }

    rows[0] = ("s0", "synthetic", 1, (6, 5, 5))
    result = report(*study(rows))
    assert result["gate"]["mean"]["estimate"] == pytest.approx(151 / 30)
    assert passed(result)["all"] is True


def test_exactly_ninety_percent_of_medians_fails():
    # Item 9 has median 3 (< 4) but no rating below 3.
    rows = synthetic_rows([(6, 6, 6)] * 9 + [(3, 3, 7)])
    result = report(*study(rows))
    assert result["gate"]["median_share"]["estimate"] == 0.9
    assert result["gate"]["mean"]["estimate"] == pytest.approx(175 / 30)
    assert passed(result) == {
        "mean": True,
        "median_share": False,
        "low_share": True,
        "raters_finished": True,
        "all": False,
    }

    rows = synthetic_rows([(6, 6, 6)] * 10 + [(3, 3, 7)])  # 10 / 11 > 0.9
    assert passed(report(*study(rows)))["median_share"] is True


def test_mean_pools_ratings_so_images_rated_more_often_weigh_more():
    # Ratings 7, 7, 7 and 3: pooled mean 24 / 4 = 6, not the mean of image means (7 + 3) / 2.
    rows = synthetic_rows([(7, 7, 7), (3, None, None)])
    assert report(*study(rows))["gate"]["mean"]["estimate"] == 6.0


def test_median_of_two_ratings_is_their_midpoint():
    # (3, 5) has median 4, which reaches the bar; (3, 4) has 3.5, which does not.
    rows = synthetic_rows([(3, 5, None), (3, 4, None)])
    assert report(*study(rows))["gate"]["median_share"]["estimate"] == 0.5


def test_exactly_ten_percent_with_a_low_rating_fails():
    rows = synthetic_rows([(6, 6, 6)] * 9 + [(2, 6, 6)])
    result = report(*study(rows))
    assert result["gate"]["low_share"]["estimate"] == 0.1
    assert passed(result) == {
        "mean": True,
        "median_share": True,
        "low_share": False,
        "raters_finished": True,
        "all": False,
    }

    rows = synthetic_rows([(6, 6, 6)] * 10 + [(2, 6, 6)])  # 1 / 11 < 0.1
    result = report(*study(rows))
    assert result["gate"]["low_share"]["estimate"] == pytest.approx(1 / 11)
    assert passed(result)["all"] is True


def test_an_unfinished_rater_fails_the_gate():
    items, ratings = study(synthetic_rows([(6, 6, 6)] * 10))
    result = report(items, ratings, unfinished=("b",))
    assert result["gate"]["raters_finished"] == {
        "n_raters": 3,
        "n_finished": 2,
        "unfinished": ["b"],
        "unfinished_names": ["b"],
        "passed": False,
    }
    assert passed(result) == {
        "mean": True,
        "median_share": True,
        "low_share": True,
        "raters_finished": False,
        "all": False,
    }


def test_per_fst_requires_the_mean_within_every_skin_type():
    rows = synthetic_rows([(6, 6, 6)] * 5, fst=1, prefix="light") + synthetic_rows(
        [(4, 5, 5)] * 5, fst=6, prefix="dark"
    )
    items, ratings = study(rows)
    overall = report(items, ratings)
    assert overall["gate"]["mean"]["estimate"] == pytest.approx(160 / 30)
    assert overall["gate"]["mean_per_fst"] is None
    assert overall["gate"]["passed"] is True

    result = report(items, ratings, GateCriteria(per_fst=True))
    groups = result["gate"]["mean_per_fst"]["groups"]
    assert set(groups) == {"1", "6"}
    assert groups["1"]["estimate"] == 6.0 and groups["1"]["passed"] is True
    assert groups["6"]["estimate"] == pytest.approx(14 / 3) and groups["6"]["passed"] is False
    assert result["gate"]["mean_per_fst"]["passed"] is False
    assert result["gate"]["passed"] is False
    assert result["breakdown"]["by_fst"]["6"]["few_items"] is True


def test_use_interval_judges_on_the_bound_not_the_estimate():
    # 1 of 12 images has a rating below 3: 8.3% passes "fewer than 10%" on the estimate, but
    # with 12 images the exact upper bound of that share is far above 2 / 12.
    rows = synthetic_rows([(6, 6, 6)] * 11 + [(2, 6, 6)])
    items, ratings = study(rows)
    point = report(items, ratings, n_boot=200)
    assert point["gate"]["low_share"]["judged_on"] == "estimate"
    assert point["gate"]["passed"] is True

    result = report(items, ratings, GateCriteria(use_interval=True), n_boot=200)
    low, mean = result["gate"]["low_share"], result["gate"]["mean"]
    assert low["estimate"] == pytest.approx(1 / 12)
    assert low["judged_on"] == "ci_high" and low["judged"] == low["ci_high"]
    assert low["ci_high"] >= 2 / 12 and low["passed"] is False
    assert mean["judged_on"] == "ci_low" and mean["judged"] == mean["ci_low"]
    assert 5.0 < mean["ci_low"] < mean["estimate"] and mean["passed"] is True
    assert result["gate"]["passed"] is False


def test_use_interval_needs_a_bootstrap_under_version_1_only():
    rows = synthetic_rows([(6, 6, 6)])
    with pytest.raises(ValueError, match="n_boot > 0"):
        report(*study(rows), GateCriteria(use_interval=True, version=1), n_boot=0)
    # Version 2's bounds are computed, not resampled.
    report(*study(rows), GateCriteria(use_interval=True), n_boot=0)


def test_breakdown_by_rater_fst_and_diagnosis():
    rows = synthetic_rows([(6, 2, 5), (6, 4, 5)], fst=2) + synthetic_rows(
        [(7, 7, 3)], fst=5, prefix="t"
    )
    items, ratings = study(rows)
    items[2] = ReviewItem("t0", "synthetic", "bcc", 5)
    breakdown = report(items, ratings, min_group_items=2)["breakdown"]
    assert breakdown["by_rater"]["b"] == {
        "n_items": 3,
        "n_rated_items": 3,
        "mean": 13 / 3,
        "median_share": 2 / 3,
        "low_share": 1 / 3,
        "why": None,
    }
    assert breakdown["by_fst"]["2"]["mean"] == pytest.approx(28 / 6)
    assert breakdown["by_fst"]["2"]["few_items"] is False
    assert breakdown["by_fst"]["5"]["few_items"] is True
    assert breakdown["by_diagnosis"]["bcc"]["mean"] == pytest.approx(17 / 3)
    assert breakdown["by_diagnosis"]["mel"]["low_share"] == 0.5


# --- bootstrap ---------------------------------------------------------------------------------


def width(criterion):
    return criterion["ci_high"] - criterion["ci_low"]


def test_bootstrap_is_deterministic_with_the_seed():
    items, ratings = study(random_study(3, 25, seed=1))
    first = report(items, ratings, V1, n_boot=200, seed=7)
    assert report(items, ratings, V1, n_boot=200, seed=7) == first
    other = report(items, ratings, V1, n_boot=200, seed=8)
    assert other["gate"]["mean"]["ci_low"] != first["gate"]["mean"]["ci_low"]
    assert other["gate"]["mean"]["estimate"] == first["gate"]["mean"]["estimate"]


def test_interval_contains_the_estimate():
    items, ratings = study(random_study(3, 40, seed=2))
    gate = report(items, ratings, n_boot=200)["gate"]
    for name in ("mean", "median_share", "low_share"):
        assert gate[name]["ci_low"] <= gate[name]["estimate"] <= gate[name]["ci_high"], name
    assert gate["mean"]["ci_low"] < gate["mean"]["ci_high"]


def test_interval_is_wider_with_fewer_raters_or_images():
    raters = tuple("abcdef")
    rows = random_study(6, 120, seed=3)
    full = report(*study(rows, raters=raters), raters=raters, n_boot=200)["gate"]["mean"]
    few_images = report(*study(rows[:15], raters=raters), raters=raters, n_boot=200)["gate"]["mean"]
    two_rows = [(i, o, f, s[:2]) for i, o, f, s in rows]
    few_raters = report(*study(two_rows, raters=raters[:2]), raters=raters[:2], n_boot=200)["gate"][
        "mean"
    ]
    assert width(few_images) > width(full)
    assert width(few_raters) > width(full)


def test_version_1_resamples_raters_as_well_as_images():
    # Every image gets 4 from one rater and 6 from the other: resampling images alone would
    # always give a mean of 5; resampling raters too gives 4 or 6 in a quarter of replicates each.
    rows = synthetic_rows([(4, 6)] * 20)
    mean = report(*study(rows, raters=("a", "b")), V1, raters=("a", "b"), n_boot=200)["gate"][
        "mean"
    ]
    assert mean["estimate"] == 5.0
    assert (mean["ci_low"], mean["ci_high"]) == (4.0, 6.0)


def test_version_2_judges_this_panel_so_only_images_vary():
    # The same study: this panel's mean is 5 for every image, so its bound has no width.
    rows = synthetic_rows([(4, 6)] * 20)
    gate = report(*study(rows, raters=("a", "b")), raters=("a", "b"))["gate"]
    assert (gate["mean"]["ci_low"], gate["mean"]["ci_high"]) == (5.0, 5.0)
    # The shares are exact binomial bounds: 20 of 20 images reach the median bar (Clopper-
    # Pearson lower bound 0.025 ** (1 / 20)); none has a rating below 3 (upper 1 - that).
    assert gate["median_share"]["ci_low"] == pytest.approx(0.025 ** (1 / 20))
    assert gate["low_share"]["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 20))


# --- agreement over time and rater behaviour ---------------------------------------------------


def test_test_retest_agreement_counted_by_hand():
    items, ratings = study(synthetic_rows([(5, 4, 4), (3, 4, 4), (6, 4, 4)]))
    # Rater a: 5 -> 5, 3 -> 5, 6 -> 4 -> exact 1 / 3, mean |difference| (0 + 2 + 2) / 3.
    ratings += [
        Rating("a", "s0", 5, 2.0, 20, "retest"),
        Rating("a", "s1", 5, 2.0, 21, "retest"),
        Rating("a", "s2", 4, 2.0, 22, "retest"),
    ]
    retest = report(items, ratings)["agreement"]["test_retest"]
    assert retest["a"]["n_pairs"] == 3
    assert retest["a"]["exact_agreement"] == pytest.approx(1 / 3)
    assert retest["a"]["mean_abs_difference"] == pytest.approx(4 / 3)
    assert retest["b"]["exact_agreement"] is None and retest["b"]["why"] == "no retest ratings"


def behaviour_study(scores_in_order, seconds):
    """One rater's scored ratings, handed over in a shuffled order of positions."""
    items = [ReviewItem(f"s{i}", "synthetic", "mel", 1) for i in range(len(scores_in_order))]
    ratings = [
        Rating("a", f"s{i}", score, secs, position=10 + i)
        for i, (score, secs) in enumerate(zip(scores_in_order, seconds, strict=True))
    ]
    rng = np.random.default_rng(0)
    ratings = [ratings[i] for i in rng.permutation(len(ratings))]
    ratings.append(Rating("a", "warm", 1, 0.1, 0, "warmup"))
    return items, ratings


def test_rater_behaviour_counted_by_hand():
    items, ratings = behaviour_study(
        [2, 3, 2, 3, 6, 5, 6, 5], [0.5, 1.0, 1.5, 3.0, 4.0, 5.0, 6.0, 7.0]
    )
    rater = report(items, ratings, raters=("a",))["raters"]["a"]
    assert (rater["n_scored"], rater["n_warmup"], rater["n_retest"]) == (8, 1, 0)
    assert rater["median_seconds"] == 3.5
    assert rater["too_fast_share"] == 2 / 8  # 1.5 s is not below 1.5 s
    assert rater["score_counts"] == {"1": 0, "2": 2, "3": 2, "4": 0, "5": 2, "6": 2, "7": 0}
    # First half 2, 3, 2, 3 (mean 2.5), second half 6, 5, 6, 5 (mean 5.5); U = 16 of 16 pairs.
    # Ties within halves only -> normal approximation: 4 tie groups of 2.
    assert rater["drift"]["value"] == 3.0
    variance = 16 / 12 * (9 - 4 * 6 / (8 * 7))
    z = (16 - 8 - 0.5) / math.sqrt(variance)
    assert rater["drift"]["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))

    slower = report(items, ratings, raters=("a",), too_fast_seconds=3.5)["raters"]["a"]
    assert slower["too_fast_share"] == 4 / 8


def test_drift_is_negative_for_a_tiring_rater_and_skips_the_middle_of_an_odd_count():
    items, ratings = behaviour_study([6, 6, 1, 3, 3], [5.0] * 5)
    drift = report(items, ratings, raters=("a",))["raters"]["a"]["drift"]
    # Halves of two: 6, 6 then 3, 3; the middle 1 is in neither.
    assert drift["value"] == -3.0


def test_drift_needs_four_ratings():
    items, ratings = behaviour_study([6, 6, 1], [5.0] * 3)
    drift = report(items, ratings, raters=("a",))["raters"]["a"]["drift"]
    assert drift["value"] is None and "4" in drift["why"]


# --- degenerate studies ------------------------------------------------------------------------


def test_no_real_images():
    result = report(*study(synthetic_rows([(6, 5, 6)] * 4)), n_boot=50)
    versus = result["synthetic_vs_real"]
    assert versus["mean_difference"]["estimate"] is None and versus["mean_difference"]["why"]
    assert versus["mann_whitney"]["p_value"] is None and versus["mann_whitney"]["why"]
    assert versus["auc_pooled"]["value"] is None and versus["auc_pooled"]["why"]
    assert versus["auc_by_rater"]["a"]["value"] is None
    assert result["gate"]["mean"]["estimate"] == pytest.approx(17 / 3)


def test_one_rater():
    rows = synthetic_rows([(6,), (5,), (7,)]) + [("r", "real", 1, (7,))]
    result = report(*study(rows, raters=("a",)), raters=("a",), n_boot=50)
    agreement = result["agreement"]
    assert agreement["krippendorff_alpha_ordinal"]["value"] is None
    assert "2 raters" in agreement["krippendorff_alpha_ordinal"]["why"]
    assert agreement["icc"]["ICC2"]["value"] is None and "2 raters" in agreement["icc"]["why"]
    assert result["gate"]["mean"]["ci_low"] <= 6.0 <= result["gate"]["mean"]["ci_high"]


def test_all_ratings_identical():
    rows = synthetic_rows([(5, 5, 5)] * 4) + [("r", "real", 1, (5, 5, 5))]
    result = report(*study(rows), n_boot=50)
    assert "identical" in result["agreement"]["krippendorff_alpha_ordinal"]["why"]
    assert "identical" in result["agreement"]["icc"]["why"]
    assert result["synthetic_vs_real"]["auc_pooled"]["value"] == 0.5
    assert result["gate"]["mean"]["ci_low"] == result["gate"]["mean"]["ci_high"] == 5.0


def test_unrated_images_are_listed_and_left_out_of_the_shares():
    rows = synthetic_rows([(6, 6, 6)] * 4) + [("never", "synthetic", 1, (None, None, None))]
    result = report(*study(rows), n_boot=50)
    assert result["counts"]["unrated_items"] == ["never"]
    assert result["gate"]["median_share"]["estimate"] == 1.0
    assert result["breakdown"]["by_fst"]["1"]["n_items"] == 5
    assert result["breakdown"]["by_fst"]["1"]["n_rated_items"] == 4


def test_nothing_rated_yet_fails_with_a_reason():
    items = [ReviewItem("s", "synthetic", "mel", 3), ReviewItem("r", "real", "mel", 3)]
    result = report(items, [], GateCriteria(per_fst=True), n_boot=20)
    assert result["gate"]["passed"] is False
    assert result["gate"]["mean"]["estimate"] is None
    assert result["gate"]["mean"]["why"] == "no scored ratings of synthetic images"
    assert result["gate"]["mean_per_fst"]["groups"]["3"]["passed"] is False
    assert result["raters"]["a"]["median_seconds"] is None


# --- bad input ---------------------------------------------------------------------------------


def test_ratings_and_items_may_be_mappings_with_integer_ids():
    items = [{"item_id": 1, "origin": "synthetic", "diagnosis": "mel", "fst": 2}]
    ratings = [{"rater_id": 7, "item_id": 1, "score": 6, "seconds": 2.5, "position": 0}]
    result = gate_report(items, ratings, GateCriteria(), raters={7: True}, n_boot=0)
    assert result["gate"]["mean"]["estimate"] == 6.0
    assert list(result["raters"]) == ["7"]


@pytest.mark.parametrize(
    ("rating", "message"),
    [
        (Rating("zed", "s0", 5, 1.0, 9), "unknown rater 'zed'"),
        (Rating("a", "nope", 5, 1.0, 9), "unknown item 'nope'"),
        (Rating("a", "s0", 4, 1.0, 9), "two scored ratings"),
        (Rating("c", "s1", 4, 1.0, 0), "two ratings at position 0"),
    ],
)
def test_inconsistent_ratings_are_rejected(rating, message):
    items, ratings = study(synthetic_rows([(6, 6, 6), (6, 6, None)]))
    with pytest.raises(ValueError, match=message):
        report(items, ratings + [rating])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": 8}, "score must be an integer 1-7"),
        ({"score": 4.0}, "score must be an integer 1-7"),
        ({"seconds": -1.0}, "seconds"),
        ({"kind": "practice"}, "kind"),
    ],
)
def test_invalid_ratings_are_rejected(fields, message):
    values = {"rater_id": "a", "item_id": "s0", "score": 5, "seconds": 1.0, "position": 0}
    with pytest.raises(ValueError, match=message):
        Rating(**(values | fields))


def test_invalid_items_are_rejected():
    with pytest.raises(ValueError, match="fst must be an integer 1-6"):
        ReviewItem("x", "synthetic", "mel", 7)
    with pytest.raises(ValueError, match="origin"):
        ReviewItem("x", "fake", "mel", 2)
    with pytest.raises(ValueError, match="appears twice"):
        report([ReviewItem("x", "real", "mel", 2)] * 2, [])


# --- GateCriteria ------------------------------------------------------------------------------


def test_criteria_defaults_round_trip_through_json():
    criteria = GateCriteria()
    assert (
        criteria.mean_min,
        criteria.median_share_min,
        criteria.median_at_least,
        criteria.low_share_max,
        criteria.low_below,
    ) == (5.0, 0.90, 4, 0.10, 3)
    assert (criteria.use_interval, criteria.per_fst, criteria.version) == (False, False, 2)
    assert (
        criteria.too_fast_seconds,
        criteria.too_fast_share_max,
        criteria.retest_mad_max,
        criteria.retest_min_pairs,
    ) == (1.5, 0.20, 1.5, 5)
    changed = GateCriteria(mean_min=5.5, use_interval=True, per_fst=True, version=1)
    assert GateCriteria.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    assert GateCriteria.from_dict({"low_below": 2}) == GateCriteria(low_below=2)


def test_criteria_reject_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown gate criteria key\(s\): colour, mean"):
        GateCriteria.from_dict({"mean": 5, "colour": "red", "mean_min": 5.0})


def test_criteria_name_every_bad_value():
    with pytest.raises(ValueError) as caught:
        GateCriteria.from_dict(
            {
                "mean_min": 8,
                "median_share_min": 1.5,
                "low_below": 0,
                "use_interval": "yes",
                "version": 0,
            }
        )
    message = str(caught.value)
    for expected in (
        "mean_min must be a number in [1, 7], got 8",
        "median_share_min must be a share in [0, 1], got 1.5",
        "low_below must be an integer score 1-7, got 0",
        "use_interval must be true or false, got 'yes'",
        "version must be one of (1, 2), got 0",
    ):
        assert expected in message
    with pytest.raises(ValueError, match="mean_min"):
        GateCriteria(mean_min=True)
    with pytest.raises(ValueError, match="low_share_max"):
        GateCriteria(low_share_max=float("nan"))


# --- blinding audit ----------------------------------------------------------------------------


def served(origin, size, width=512, height=512, fmt="JPEG", **headers):
    base = {"Content-Type": "image/jpeg", "Cache-Control": "no-store"}
    return {
        "origin": origin,
        "bytes": size,
        "width": width,
        "height": height,
        "format": fmt,
        "headers": base | headers,
    }


def test_identical_files_carry_no_information():
    files = [served("real", 50_000), served("synthetic", 50_000)] * 3
    audit = blinding_audit(files)
    assert audit["size_auc"]["value"] == 0.5
    assert audit["identical_dimensions"] and audit["dimensions"] == [[512, 512]]
    assert audit["identical_format"] and audit["formats"] == ["JPEG"]
    assert audit["identical_content_type"] and audit["content_types"] == ["image/jpeg"]
    assert audit["headers_differing_by_origin"] == {}
    assert audit["n_files"] == {"synthetic": 3, "real": 3}


@pytest.mark.parametrize("real_is_bigger", [True, False])
def test_separated_sizes_give_auc_one_either_way(real_is_bigger):
    big, small = [60_000, 61_000, 65_000], [40_000, 41_000, 45_000]
    real, synthetic = (big, small) if real_is_bigger else (small, big)
    files = [served("real", s) for s in real] + [served("synthetic", s) for s in synthetic]
    assert blinding_audit(files)["size_auc"]["value"] == 1.0


def test_size_auc_counted_by_hand():
    # Real 10, 30 vs synthetic 20, 40: real is larger in 1 of 4 pairs -> AUC 0.25 -> 0.75.
    files = [
        served("real", 10),
        served("real", 30),
        served("synthetic", 20),
        served("synthetic", 40),
    ]
    assert blinding_audit(files)["size_auc"]["value"] == 0.75


def test_differences_in_served_properties_are_reported():
    files = [
        served("real", 100, **{"Last-Modified": "Mon"}),
        served(
            "synthetic",
            100,
            width=640,
            height=480,
            fmt="PNG",
            **{"content-type": "image/png", "X-Generator": "fairskin"},
        ),
    ]
    audit = blinding_audit(files)
    assert audit["dimensions"] == [[512, 512], [640, 480]] and not audit["identical_dimensions"]
    assert audit["formats"] == ["JPEG", "PNG"] and not audit["identical_format"]
    assert not audit["identical_content_type"]
    differing = audit["headers_differing_by_origin"]
    assert set(differing) == {"content-type", "last-modified", "x-generator"}
    assert differing["x-generator"] == {"synthetic": ["fairskin"], "real": [None]}
    assert differing["content-type"] == {"synthetic": ["image/png"], "real": ["image/jpeg"]}


def test_blinding_audit_rejects_incomplete_files():
    with pytest.raises(ValueError, match="file 1 is missing headers"):
        blinding_audit(
            [
                served("real", 1),
                {"origin": "real", "bytes": 1, "width": 1, "height": 1, "format": "JPEG"},
            ]
        )
    with pytest.raises(ValueError, match="origin"):
        blinding_audit([served("control", 1)])
    with pytest.raises(ValueError, match="no files"):
        blinding_audit([])


def test_blinding_audit_rejects_bad_dimensions():
    with pytest.raises(ValueError, match="file 0: width must be an integer >= 1"):
        blinding_audit([served("real", 1, width=0)])
