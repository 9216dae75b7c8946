import random

import pytest

from fairskin.generation.plan import (
    CandidateRange,
    Plan,
    PlanError,
    Stratum,
    StratumPlan,
    candidate_cap,
    candidate_seed,
    cut_into_shards,
    decide_stratum,
    plan_batch,
    plan_quotas,
)


def test_quotas_sum_to_the_target_and_follow_the_distribution():
    quotas = plan_quotas(1000, ["MEL", "NV", "DF", "VASC"])
    assert sum(quotas.values()) == 1000
    assert {dx for dx, _ in quotas} == {"MEL", "NV", "DF", "VASC"}
    per_fst = {f: sum(n for (_, fst), n in quotas.items() if fst == f) / 1000 for f in range(1, 7)}
    assert per_fst == pytest.approx(
        {1: 0.10, 2: 0.10, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}, abs=0.005
    )  # whole images
    assert quotas[("DF", 6)] == 62 or quotas[("DF", 6)] == 63  # 250 * 0.25 = 62.5


def test_small_targets_apportion_by_largest_remainder_deterministically():
    # 7 images over 2 classes: 4 + 3 (ties go to the first code); then by FST share.
    quotas = plan_quotas(7, ["MEL", "NV"], {5: 0.5, 6: 0.5})
    assert sum(quotas.values()) == 7
    assert quotas == plan_quotas(7, ["MEL", "NV"], {5: 0.5, 6: 0.5})
    assert sorted(quotas.values()) == [1, 2, 2, 2]


@pytest.mark.parametrize(
    ("target", "dx", "dist"),
    [
        (0, ["MEL"], None),
        (10, [], None),
        (10, ["MEL", "MEL"], None),
        (10, ["OTHER"], None),
        (10, ["MEL"], {1: 0.5, 2: 0.6}),
        (10, ["MEL"], {7: 1.0}),
        (10, ["XYZ"], None),
    ],
)
def test_bad_requests_are_refused(target, dx, dist):
    with pytest.raises((PlanError, ValueError)):
        plan_quotas(target, dx, dist)


def test_seeds_are_fixed_distinct_and_independent_of_sharding():
    seeds = {
        candidate_seed(7, (dx, f), i) for dx in ("MEL", "NV") for f in (1, 6) for i in range(50)
    }
    assert len(seeds) == 200
    assert candidate_seed(7, ("MEL", 6), 3) == candidate_seed(7, ("MEL", 6), 3)
    assert candidate_seed(7, ("MEL", 6), 3) != candidate_seed(8, ("MEL", 6), 3)
    assert candidate_seed(7, Stratum("MEL", 6), 3) == candidate_seed(7, ("MEL", 6), 3)
    cap = candidate_cap(10, 1.5)
    small = cut_into_shards([CandidateRange("MEL", 6, 0, cap)], 4)
    large = cut_into_shards([CandidateRange("MEL", 6, 0, cap)], 100)
    covered = [i for shard in small for r in shard for i in range(r.start, r.stop)]
    assert covered == [i for shard in large for r in shard for i in range(r.start, r.stop)]
    assert covered == list(range(15)) and [len(shard) for shard in small] == [1, 1, 1, 1]


def test_work_is_cut_into_shards_of_at_most_the_shard_size():
    work = [CandidateRange("MEL", 5, 0, 5), CandidateRange("NV", 6, 2, 4)]
    assert cut_into_shards(work, 3) == [
        [("MEL", 5, 0, 3)],
        [("MEL", 5, 3, 5), ("NV", 6, 2, 3)],
        [("NV", 6, 3, 4)],
    ]
    assert cut_into_shards(work, 100) == [work]
    assert [r.size for r in work] == [5, 2] and work[1].stratum == Stratum("NV", 6)
    assert cut_into_shards([], 3) == []
    with pytest.raises(PlanError):
        cut_into_shards(work, 0)


def test_a_stratum_is_stored_as_one_key_and_read_back():
    stratum = Stratum("MEL", 6)
    assert stratum.key == "MEL:6" and Stratum.from_key("MEL:6") == stratum == ("MEL", 6)
    assert Stratum.from_key(stratum.key).fst == 6
    for bad in ("MEL", ":6", "MEL:six"):
        with pytest.raises(ValueError):
            Stratum.from_key(bad)


def test_a_plan_caps_every_stratum_once_and_round_trips_through_its_json():
    plan = plan_batch(7, ["MEL", "NV"], {5: 0.5, 6: 0.5}, 1.5)
    assert plan.quotas_json() == {"MEL:5": 2, "MEL:6": 2, "NV:5": 2, "NV:6": 1}
    assert list(plan) == [
        StratumPlan(Stratum("MEL", 5), 2, 3),
        StratumPlan(Stratum("MEL", 6), 2, 3),
        StratumPlan(Stratum("NV", 5), 2, 3),
        StratumPlan(Stratum("NV", 6), 1, 2),
    ]
    assert Plan.from_json(plan.quotas_json(), 1.5) == plan and len(plan) == 4
    assert plan_quotas(7, ["MEL", "NV"], {5: 0.5, 6: 0.5}) == {s.stratum: s.quota for s in plan}
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(PlanError, match="at least 1x"):
            Plan.from_json({"MEL:5": 2}, bad)


def _decide(scored, quota=3, cap=6):
    return decide_stratum(quota, cap, scored, is_duplicate=lambda e, accepted: e in accepted)


def test_acceptance_walks_seed_order_and_stops_at_the_quota():
    scored = {
        0: ((), "a"),
        1: (("too dark",), "b"),
        2: ((), "a"),
        3: ((), "c"),
        4: ((), "d"),
        5: ((), "e"),
    }
    decision = _decide(scored)
    assert decision.accepted == [0, 3, 4]
    assert [v.reasons for v in decision.verdicts] == [
        (),
        ("too dark",),
        ("near-duplicate of an accepted image",),
        (),
        (),
    ]
    assert decision.complete and decision.shortfall == 0


def test_acceptance_does_not_depend_on_the_order_results_arrive():
    scored = {i: ((("blurry",) if i % 3 == 0 else ()), f"e{i % 4}") for i in range(6)}
    items = list(scored.items())
    random.Random(1).shuffle(items)
    assert _decide(dict(items)).accepted == _decide(scored).accepted


def test_decisions_wait_for_missing_earlier_seeds_and_report_shortfalls():
    waiting = _decide({0: ((), "a"), 2: ((), "b")})
    assert waiting.accepted == [0] and not waiting.complete  # index 1 not scored yet
    spent = _decide({i: (("wrong class",), str(i)) for i in range(6)})
    assert spent.complete and spent.accepted == [] and spent.shortfall == 3
