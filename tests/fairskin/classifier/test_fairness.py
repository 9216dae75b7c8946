"""Fairness metrics on small cases worked out by hand (the comments show the arithmetic)."""

import pytest

from fairskin.classifier.fairness import fairness_report, fairness_report_multiclass

# Group A: y 0 0 1 1, scores .1 .6 .4 .9. Pairs (pos > neg): .4>.1 yes, .4>.6 no, .9>.1 yes,
#   .9>.6 yes -> AUROC 3/4. At 0.5 the predictions are 0 1 0 1: TPR 1/2, FPR 1/2, accuracy 2/4.
# Group B: y 0 1 1, scores .2 .7 .8 -> AUROC 1; predictions 0 1 1: TPR 1, FPR 0, accuracy 3/3.
# Group C: y 0 0 (no positives), scores .3 .7 -> AUROC undefined, TPR undefined; FPR 1/2.
# Group D: y 1 1 1 (no negatives), scores .6 .2 .1 -> AUROC undefined, FPR undefined;
#   TPR 1/3.
Y = [0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1]
S = [0.1, 0.6, 0.4, 0.9, 0.2, 0.7, 0.8, 0.3, 0.7, 0.6, 0.2, 0.1]
G = ["A"] * 4 + ["B"] * 3 + ["C"] * 2 + ["D"] * 3


@pytest.fixture(scope="module")
def report():
    return fairness_report(Y, S, G, threshold=0.5)


def test_auroc_per_group_and_gap(report):
    assert report["auroc_by_group"] == {"A": 0.75, "B": 1.0, "C": None, "D": None}
    assert report["auroc_gap"] == pytest.approx(0.25)


def test_overall_auroc_counts_every_positive_negative_pair():
    # 7 positives x 5 negatives = 35 pairs; ties count one half. Wins per positive score:
    # .4 -> 3, .9 -> 5, .7 -> 4.5, .8 -> 5, .6 -> 3.5, .2 -> 1.5, .1 -> 0.5; total 23.
    assert fairness_report(Y, S, G)["auroc"] == pytest.approx(23 / 35)


def test_rates_leave_out_groups_without_positives_or_negatives(report):
    assert report["tpr_by_group"] == pytest.approx({"A": 0.5, "B": 1.0, "C": None, "D": 1 / 3})
    assert report["fpr_by_group"] == pytest.approx({"A": 0.5, "B": 0.0, "C": 0.5, "D": None})
    # TPR spread: 1 - 1/3 over A, B, D; FPR spread: 0.5 - 0 over A, B, C; the larger wins.
    assert report["tpr_difference"] == pytest.approx(2 / 3)
    assert report["fpr_difference"] == pytest.approx(0.5)
    assert report["equalized_odds_difference"] == pytest.approx(2 / 3)


def test_accuracy_overall_and_by_group(report):
    assert report["accuracy"] == pytest.approx(7 / 12)
    assert report["accuracy_by_group"] == pytest.approx({"A": 0.5, "B": 1.0, "C": 0.5, "D": 1 / 3})


def test_notes_say_what_was_undefined_and_left_out(report):
    notes = " | ".join(report["notes"])
    assert "group C: AUROC undefined (all 2 labels are negative)" in notes
    assert "group D: AUROC undefined (all 3 labels are positive)" in notes
    assert "group C: no positives, left out of the TPR difference" in notes
    assert "group D: no negatives, left out of the FPR difference" in notes


def test_single_defined_group_has_no_gap():
    r = fairness_report([0, 1, 1, 1], [0.2, 0.8, 0.9, 0.7], ["A", "A", "B", "B"])
    assert r["auroc_by_group"] == {"A": 1.0, "B": None}
    assert r["auroc_gap"] is None


def test_bootstrap_intervals_bracket_the_point_estimate():
    y = [0, 1] * 60
    s = [0.3 + 0.4 * v + (i % 7) * 0.02 for i, v in enumerate(y)]
    g = ["A", "B", "C"] * 40
    r = fairness_report(y, s, g, n_bootstrap=200, seed=1)
    low, high = r["ci"]["accuracy"]
    assert low <= r["accuracy"] <= high
    for group, interval in r["ci"]["auroc_by_group"].items():
        assert interval[0] <= r["auroc_by_group"][group] <= interval[1]


@pytest.mark.parametrize(
    "bad", [([0, 2], [0.1, 0.2], ["A", "A"]), ([], [], []), ([0, 1], [0.1], ["A", "A"])]
)
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        fairness_report(*bad)


def test_multiclass_report_on_a_hand_worked_case():
    # G1 is perfect. G2: y 0 0 1, probabilities below.
    #   class 0: labels 1 1 0, scores .6 .2 .5 -> .6>.5 yes, .2>.5 no -> AUROC 1/2
    #   class 1: labels 0 0 1, scores .3 .7 .4 -> .4>.3 yes, .4>.7 no -> AUROC 1/2
    #   class 2: no positive -> undefined; macro over defined classes = 1/2.
    # Predictions in G2: 0 1 0 (accuracy 1/3). One-vs-rest equalized odds:
    #   class 0: TPR 1 vs 1/2, FPR 0 vs 1 -> 1;  class 1: TPR 1 vs 0 -> 1;  class 2: FPR 0 vs 0.
    y = [0, 1, 2, 0, 0, 1]
    proba = [
        [0.8, 0.1, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.1, 0.8],
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],
        [0.5, 0.4, 0.1],
    ]
    groups = ["G1"] * 3 + ["G2"] * 3
    r = fairness_report_multiclass(y, proba, groups, class_names=["MEL", "NV", "BCC"])
    assert r["auroc_by_group"] == pytest.approx({"G1": 1.0, "G2": 0.5})
    assert r["auroc_gap"] == pytest.approx(0.5)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["accuracy_by_group"] == pytest.approx({"G1": 1.0, "G2": 1 / 3})
    assert r["equalized_odds_by_class"] == pytest.approx({"MEL": 1.0, "NV": 1.0, "BCC": 0.0})
    assert r["equalized_odds_difference"] == pytest.approx(1.0)
    assert r["per_class"]["MEL"]["recall"] == pytest.approx(2 / 3)  # 2 of 3 true MEL found
    assert r["per_class"]["BCC"]["precision"] == pytest.approx(1.0)


def fairlearn_style_eod(y, pred, groups):
    """fairlearn's own equalized_odds_difference (a development dependency for these checks):
    per group the TPR and FPR (a group without positives reads TPR 0), then the larger of the
    two max - min spreads."""
    from fairlearn.metrics import equalized_odds_difference

    return equalized_odds_difference(y, pred, sensitive_features=groups)


def binary_case(seed, n=300, drop_positives_of=None):
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = rng.choice(["A", "B", "C"], n).tolist()
    y = rng.integers(0, 2, n)
    if drop_positives_of:
        y[[g == drop_positives_of for g in groups]] = 0
    score = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
    return y.tolist(), score.tolist(), groups


def test_binary_equalized_odds_equals_fairlearns_when_every_group_holds_both_classes():
    y, s, g = binary_case(5)
    pred = [int(v >= 0.5) for v in s]
    assert fairness_report(y, s, g)["equalized_odds_difference"] == pytest.approx(
        fairlearn_style_eod(y, pred, g)
    )


def test_a_group_without_positives_is_left_out_and_named_where_fairlearn_reads_tpr_0():
    y, s, g = binary_case(6, drop_positives_of="C")
    pred = [int(v >= 0.5) for v in s]
    r = fairness_report(y, s, g)
    assert r["tpr_by_group"]["C"] is None
    assert "group C: no positives, left out of the TPR difference" in r["notes"]
    # fairlearn counts C's TPR as 0, which makes the TPR spread the largest TPR.
    assert fairlearn_style_eod(y, pred, g) == pytest.approx(
        max(v for v in r["tpr_by_group"].values() if v is not None)
    )
    assert r["equalized_odds_difference"] < fairlearn_style_eod(y, pred, g)


def test_per_group_auroc_averages_only_the_classes_every_group_holds():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    n = 600
    groups = np.array(["I–II", "III–IV", "V–VI"])[rng.integers(0, 3, n)]
    y = rng.integers(0, 4, n)
    y[(groups == "V–VI") & (y == 3)] = 0  # V–VI holds no image of class D
    proba = rng.dirichlet(np.ones(4), n)
    proba[np.arange(n), y] += 0.3
    proba /= proba.sum(axis=1, keepdims=True)
    r = fairness_report_multiclass(y, proba, groups, class_names=["A", "B", "C", "D"])
    assert r["classes_by_group"] == {
        "I–II": ["A", "B", "C", "D"],
        "III–IV": ["A", "B", "C", "D"],
        "V–VI": ["A", "B", "C"],
    }
    assert r["auroc_by_group_classes"] == ["A", "B", "C"]
    assert r["auroc_classes"] == ["A", "B", "C", "D"]
    for g in ("I–II", "V–VI"):
        m = groups == g
        expected = np.mean([roc_auc_score(y[m] == c, proba[m, c]) for c in range(3)])
        assert r["auroc_by_group"][g] == pytest.approx(expected)
    assert any("leaving out D (group V–VI lacks D)" in note for note in r["notes"])
    # Equalized odds for D: V–VI is left out of D's TPR spread, named, and kept in its FPR.
    detail = r["equalized_odds_detail"]["D"]
    assert detail["excluded_from_tpr"] == ["V–VI"] and detail["excluded_from_fpr"] == []
    assert (
        "equalized odds, class D: group V–VI has no D image, left out of the TPR difference"
        in (r["notes"])
    )
