"""The hard-example planner: quotas follow a given error table, within the floor and the cap."""

import pytest

from fairskin.generation.hard_example import (
    HardExampleError,
    HardExampleSettings,
    StratumErrors,
    error_table,
    plan_hard_examples,
)
from fairskin.generation.plan import PlanError, check_quotas

S = StratumErrors


def quotas(plan):
    return {r.stratum.key: r.quota for r in plan.rows}


def test_quotas_follow_the_laplace_error_and_sum_to_the_target():
    table = [S("MEL", 6, 9, 7), S("MEL", 2, 10, 1), S("NV", 3, 8, 0), S("NV", 5, 6, 3)]
    plan = plan_hard_examples(table, 40, HardExampleSettings(floor=1, cap_share=1, min_images=5))
    q = quotas(plan)
    assert sum(q.values()) == 40
    # 36 beyond the floors, shared by (e+1)/(n+2): 8/11, 2/12, 1/10, 4/8 -> 17.5, 4.0, 2.4, 12.0
    assert q == {"MEL:6": 19, "MEL:2": 5, "NV:3": 3, "NV:5": 13}
    # A higher smoothed error never gets fewer images.
    by_laplace = sorted(plan.rows, key=lambda r: r.stratum.laplace)
    assert [r.quota for r in by_laplace] == sorted(r.quota for r in by_laplace)
    assert plan.quotas() == q


def test_the_reason_names_errors_rate_laplace_and_quota():
    table = [S("MEL", 6, 9, 7), S("NV", 3, 20, 2)]
    plan = plan_hard_examples(table, 20, HardExampleSettings(floor=1, cap_share=1, min_images=5))
    mel = plan.rows[0]
    assert mel.reason == (
        f"MEL × FST VI: 7 of 9 validation images misclassified (78 %, Laplace 73 %) "
        f"→ quota {mel.quota}"
    )
    assert mel.judged and plan.to_json()["table"][0]["reason"] == mel.reason


def test_the_cap_bounds_a_stratum_and_its_surplus_goes_to_the_others():
    table = [S("MEL", 6, 10, 10), S("MEL", 5, 10, 1), S("NV", 3, 10, 1), S("NV", 4, 10, 0)]
    plan = plan_hard_examples(table, 40, HardExampleSettings(floor=2, cap_share=0.3))
    q = quotas(plan)
    assert plan.cap == 12 and q["MEL:6"] == 12 and plan.rows[0].capped
    assert "(at the cap)" in plan.rows[0].reason
    assert sum(q.values()) == 40 and all(2 <= n <= 12 for n in q.values())
    # Uncapped, MEL:6 (Laplace 11/12) would take far more than 12.
    free = quotas(plan_hard_examples(table, 40, HardExampleSettings(floor=2, cap_share=1)))
    assert free["MEL:6"] > 12


def test_a_stratum_with_too_few_images_stays_at_the_floor_and_says_so():
    table = [S("MEL", 6, 2, 2), S("MEL", 1, 0, 0), S("NV", 3, 12, 3), S("NV", 5, 12, 6)]
    plan = plan_hard_examples(table, 30, HardExampleSettings(floor=3, cap_share=1, min_images=5))
    q = quotas(plan)
    assert q["MEL:6"] == 3 and q["MEL:1"] == 3  # 2 of 2 wrong is no evidence: at the floor
    assert not plan.rows[0].judged and "too few images to judge" in plan.rows[0].reason
    assert "quota at the floor → quota 3" in plan.rows[0].reason
    assert "MEL × FST I: no validation image" in plan.rows[1].reason
    assert q["NV:5"] > q["NV:3"] and sum(q.values()) == 30


def test_a_zero_floor_drops_unjudged_strata_from_the_batch_quotas():
    table = [S("MEL", 6, 1, 1), S("NV", 3, 10, 5)]
    plan = plan_hard_examples(table, 5, HardExampleSettings(floor=0, cap_share=1, min_images=5))
    assert plan.quotas() == {"NV:3": 5}


def test_the_plan_is_deterministic_and_ties_go_in_a_fixed_order():
    # Four equal strata and 2 spare images: the lighter-numbered, earlier-class ones get them.
    table = [S("NV", 2, 10, 5), S("MEL", 4, 10, 5), S("MEL", 3, 10, 5), S("NV", 1, 10, 5)]
    settings = HardExampleSettings(floor=0, cap_share=1, min_images=1)
    first = quotas(plan_hard_examples(table, 6, settings))
    assert first == {"NV:2": 1, "MEL:4": 2, "MEL:3": 2, "NV:1": 1}
    assert quotas(plan_hard_examples(list(reversed(table)), 6, settings)) == first
    assert plan_hard_examples(table, 6, settings) == plan_hard_examples(table, 6, settings)


@pytest.mark.parametrize(
    ("table", "target", "settings", "message"),
    [
        ([], 10, HardExampleSettings(), "the error table is empty"),
        ([S("MEL", 6, 9, 7)] * 2, 10, HardExampleSettings(), "more than once"),
        ([S("MEL", 6, 9, 10)], 10, HardExampleSettings(), "10 errors of 9 images is impossible"),
        ([S("MEL", 6, 9, 7)], 0, HardExampleSettings(), "positive whole number"),
        (
            [S("MEL", f, 9, 1) for f in range(1, 7)],
            5,
            HardExampleSettings(floor=1),
            "cannot give 6 strata 1 image(s) each",
        ),
        (
            [S("MEL", 6, 3, 1), S("NV", 3, 2, 0)],
            10,
            HardExampleSettings(min_images=5),
            "no stratum has 5 or more validation images",
        ),
        (
            [S("MEL", 6, 9, 7), S("NV", 3, 1, 0)],
            20,
            HardExampleSettings(floor=1, cap_share=0.25),
            "cannot take 20 images",
        ),
        ([S("MEL", 6, 9, 7)], 10, HardExampleSettings(cap_share=0), "cap share"),
        ([S("MEL", 6, 9, 7)], 10, HardExampleSettings(floor=-1), "the floor"),
        ([S("MEL", 6, 9, 7)], 10, HardExampleSettings(min_images=0), "minimum"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(table, target, settings, message):
    with pytest.raises(HardExampleError) as refusal:
        plan_hard_examples(table, target, settings)
    assert message in str(refusal.value)


PREDICTIONS = {
    "classes": ["MEL", "NV", "BCC"],
    "ids": ["1", "2", "3", "4", "5"],
    "labels": [0, 0, 1, 1, 2],
    "fst": [6, 6, 3, 3, None],
    "proba": [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.5, 0.0], [0, 0, 1]],
}


def test_the_error_table_counts_misclassified_validation_images_per_stratum():
    table = {s.key: s for s in error_table(PREDICTIONS, ["MEL", "NV"], fsts=[3, 6])}
    assert list(table) == ["MEL:3", "MEL:6", "NV:3", "NV:6"]
    assert (table["MEL:6"].n, table["MEL:6"].errors) == (2, 1)
    # An exact tie goes to the first class (MEL), so this NV image counts as an error.
    assert (table["NV:3"].n, table["NV:3"].errors) == (2, 1)
    assert table["MEL:3"].n == 0 and table["MEL:3"].rate is None and table["MEL:3"].laplace == 0.5


@pytest.mark.parametrize(
    ("predictions", "diagnoses", "message"),
    [
        ({**PREDICTIONS, "labels": []}, ["MEL"], "stored no validation predictions"),
        (PREDICTIONS, ["DF"], "DF: not a class of this classifier"),
        (PREDICTIONS, [], "at least one diagnosis"),
        ({**PREDICTIONS, "fst": [6]}, ["MEL"], "disagree in length"),
        ({**PREDICTIONS, "proba": [[1, 0]] * 5}, ["MEL"], "has 2 values for 3 classes"),
    ],
)
def test_bad_predictions_are_refused(predictions, diagnoses, message):
    with pytest.raises(HardExampleError) as refusal:
        error_table(predictions, diagnoses)
    assert message in str(refusal.value)


def test_explicit_batch_quotas_are_checked():
    assert check_quotas({"MEL:6": 3, "NV:1": 0, "NV:2": 2}, 5) == {("MEL", 6): 3, ("NV", 2): 2}
    for quotas, target, message in [
        ({"MEL:6": 3}, 4, "add up to 3, not the target of 4"),
        ({"XYZ:6": 3}, 3, "XYZ is not a diagnosis"),
        ({"OTHER:6": 3}, 3, "OTHER is not a diagnosis"),
        ({"MEL:9": 3}, 3, "skin types are 1-6"),
        ({"MEL6": 3}, 3, "not a DIAGNOSIS:FST stratum"),
        ({"MEL:6": -1, "NV:1": 4}, 3, "whole number of 0 or more"),
        ({"MEL:6": 1.5}, 3, "whole number of 0 or more"),
        ({}, 3, "empty"),
    ]:
        with pytest.raises(PlanError) as refusal:
            check_quotas(quotas, target)
        assert message in str(refusal.value)
