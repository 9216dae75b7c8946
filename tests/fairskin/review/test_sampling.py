import itertools
import random
from collections import Counter

import pytest

from fairskin.review.sampling import Candidate, rater_order, sample_study


def make_pool(counts: dict[tuple[str, int], int], *, first_id: int) -> list[Candidate]:
    pool = []
    next_id = first_id
    for (dx, fst), count in counts.items():
        for _ in range(count):
            pool.append(Candidate(next_id, dx, fst))
            next_id += 1
    return pool


BATCH = {("MEL", 5): 300, ("MEL", 6): 200, ("NV", 3): 500, ("NV", 6): 100}
# MEL/6 has no real images; the rest have plenty.
CATALOG = {("MEL", 5): 80, ("MEL", 3): 40, ("NV", 3): 120, ("NV", 6): 30, ("BCC", 6): 20}


@pytest.fixture
def batch() -> list[Candidate]:
    return make_pool(BATCH, first_id=1)


@pytest.fixture
def catalog() -> list[Candidate]:
    return make_pool(CATALOG, first_id=10_000)


def stratum_of(pool: list[Candidate]) -> dict[int, tuple[str, int]]:
    return {c.id: c.stratum for c in pool}


def test_synthetic_draw_is_proportional_to_the_batch_and_adds_up(batch, catalog):
    plan = sample_study(batch, catalog, size=500, seed=7)

    # 500 * (300, 200, 500, 100) / 1100 = 136.4, 90.9, 227.3, 45.5: floors give 498, the two
    # largest remainders (MEL/6, NV/6) get the last two.
    expected = {("MEL", 5): 136, ("MEL", 6): 91, ("NV", 3): 227, ("NV", 6): 46}
    assert {s: c.synthetic for s, c in plan.strata.items()} == expected
    assert {s: c.in_batch for s, c in plan.strata.items()} == BATCH
    assert len(plan.synthetic_ids) == len(set(plan.synthetic_ids)) == 500
    drawn_strata = Counter(stratum_of(batch)[i] for i in plan.synthetic_ids)
    assert drawn_strata == expected


def test_the_same_seed_gives_the_same_plan_whatever_the_input_order(batch, catalog):
    plan = sample_study(batch, catalog, size=500, seed=7)
    shuffled_batch, shuffled_catalog = list(batch), list(catalog)
    random.Random(1).shuffle(shuffled_batch)
    random.Random(2).shuffle(shuffled_catalog)

    assert sample_study(shuffled_batch, shuffled_catalog, size=500, seed=7) == plan
    other = sample_study(batch, catalog, size=500, seed=8)
    assert other.synthetic_ids != plan.synthetic_ids
    assert other.control_ids != plan.control_ids
    assert plan.seed == 7


def test_controls_are_one_in_four_by_default_and_matched_to_the_strata(batch, catalog):
    plan = sample_study(batch, catalog, seed=7)

    assert len(plan.controls) == plan.controls_wanted == 125
    assert plan.control_ratio == pytest.approx(0.25)
    assert plan.control_shortfall == 0
    # 125 * (136, 91, 227, 46) / 500 = 34, 22.75, 56.75, 11.5: the .75s round up.
    wanted = {s: c.controls_wanted for s, c in plan.strata.items()}
    assert wanted == {("MEL", 5): 34, ("MEL", 6): 23, ("NV", 3): 57, ("NV", 6): 11}
    real_strata = stratum_of(catalog)
    for control in plan.controls:
        if not control.is_substitute:
            assert real_strata[control.id] == control.stratum
    per_stratum = Counter(c.stratum for c in plan.controls)
    assert per_stratum == wanted


def test_a_stratum_without_real_images_borrows_from_the_closest_fst_of_its_diagnosis(
    batch, catalog
):
    plan = sample_study(batch, catalog, seed=7)

    substitutes = [c for c in plan.controls if c.is_substitute]
    assert len(substitutes) == 23
    real_strata = stratum_of(catalog)
    for control in substitutes:
        assert control.stratum == ("MEL", 6)
        # MEL/5 (one type away), not MEL/3 nor the same-FST BCC/6 or NV/6.
        assert control.substituted_from == ("MEL", 5)
        assert real_strata[control.id] == ("MEL", 5)
        assert "MEL/FST VI" in control.reason
    assert plan.strata[("MEL", 6)].controls_substituted == 23
    assert plan.strata[("MEL", 6)].controls_matched == 0
    assert plan.substitutions == (
        "23 control(s) for MEL/FST VI drawn from MEL/FST V: "
        "no real image of MEL/FST VI left in the catalog",
    )
    assert all(not c.is_substitute for c in plan.controls if c.stratum != ("MEL", 6))


def test_equally_close_skin_types_resolve_to_the_lower_one():
    batch = make_pool({("MEL", 4): 8}, first_id=1)
    catalog = make_pool({("MEL", 5): 5, ("MEL", 3): 5}, first_id=100)
    plan = sample_study(batch, catalog, size=8, control_ratio=0.5, seed=1)

    assert [c.substituted_from for c in plan.controls] == [("MEL", 3)] * 4


def test_without_the_diagnosis_the_same_skin_type_of_another_diagnosis_is_used():
    batch = make_pool({("DF", 6): 8}, first_id=1)
    catalog = make_pool({("NV", 5): 10, ("BCC", 6): 2, ("AK", 6): 10}, first_id=100)
    plan = sample_study(batch, catalog, size=8, control_ratio=0.5, seed=1)

    # Both same-FST strata come before NV/5; AK sorts before BCC.
    assert [c.substituted_from for c in plan.controls] == [("AK", 6)] * 4


def test_a_short_stratum_uses_its_own_images_first_then_the_nearest():
    batch = make_pool({("NV", 2): 20}, first_id=1)
    catalog = make_pool({("NV", 2): 2, ("NV", 1): 3, ("NV", 3): 10}, first_id=100)
    plan = sample_study(batch, catalog, size=20, control_ratio=0.25, seed=3)

    sources = Counter(c.substituted_from for c in plan.controls)
    # 5 wanted: both NV/2 images, then NV/1 (tie with NV/3, lower FST) gives the other three.
    assert sources == {None: 2, ("NV", 1): 3}
    assert plan.substitutions[0].endswith("only 2 real image(s) of NV/FST II for 5 controls")


def test_no_real_image_is_drawn_twice_when_strata_compete_for_a_donor():
    batch = make_pool({("MEL", 1): 10, ("MEL", 2): 10, ("MEL", 3): 10}, first_id=1)
    catalog = make_pool({("MEL", 2): 9}, first_id=100)
    plan = sample_study(batch, catalog, size=30, control_ratio=0.3, seed=5)

    ids = plan.control_ids
    assert len(ids) == len(set(ids)) == 9
    assert set(ids) == {c.id for c in catalog}
    assert plan.control_shortfall == 0


def test_running_out_of_real_images_reports_the_shortfall():
    batch = make_pool({("MEL", 1): 60, ("NV", 2): 40}, first_id=1)
    catalog = make_pool({("NV", 2): 4, ("BCC", 4): 6}, first_id=100)
    plan = sample_study(batch, catalog, size=100, seed=5)

    assert plan.controls_wanted == 25
    assert len(plan.controls) == 10
    assert plan.control_shortfall == 15
    assert plan.control_ratio == pytest.approx(0.10)
    assert set(plan.control_ids) == {c.id for c in catalog}


def test_a_size_above_the_batch_takes_every_synthetic_image(batch, catalog):
    plan = sample_study(batch, catalog, size=5000, seed=7)

    assert set(plan.synthetic_ids) == {c.id for c in batch}
    assert plan.controls_wanted == round(1100 * 0.25)


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 0},
        {"control_ratio": -0.1},
        {"control_ratio": float("nan")},
        {"seed": -1},
    ],
)
def test_bad_parameters_are_refused(batch, catalog, bad):
    arguments = {"size": 500, "control_ratio": 0.25, "seed": 1} | bad
    with pytest.raises(ValueError):
        sample_study(batch, catalog, **arguments)


def test_bad_candidates_are_refused(catalog):
    with pytest.raises(ValueError, match="more than once"):
        sample_study([Candidate(1, "MEL", 2), Candidate(1, "NV", 3)], catalog, seed=1)
    with pytest.raises(ValueError, match="no synthetic images"):
        sample_study([], catalog, seed=1)
    with pytest.raises(ValueError, match="1-6"):
        Candidate(1, "MEL", 7)


# --- rater_order ---------------------------------------------------------------------------

STUDY = [(i, "synthetic") for i in range(1, 501)] + [(1000 + i, "real") for i in range(125)]
WARMUP = (9001, 9002, 9003)


def longest_runs(entries, origins: dict[int, str]) -> dict[str, int]:
    longest: dict[str, int] = {}
    previous, run = None, 0
    for entry in entries:
        if entry.kind == "warmup":
            continue
        origin = origins[entry.item_id]
        run = run + 1 if origin == previous else 1
        previous = origin
        longest[origin] = max(longest.get(origin, 0), run)
    return longest


def test_origins_never_run_longer_than_the_mix_allows():
    origins = dict(STUDY)
    order = rater_order(STUDY, seed=11, rater_index=0, max_run=5, retest_share=0.1)
    runs = longest_runs(order, origins)
    assert runs["synthetic"] <= 5
    assert runs["real"] <= 5

    # With 500 synthetic among 125 real, runs of 3 are impossible: 126 gaps need runs of
    # ceil(500 / 126) = 4. The synthetic runs are held to exactly that, the real ones to 3.
    order = rater_order(STUDY, seed=11, rater_index=0, max_run=3)
    runs = longest_runs(order, origins)
    assert runs["synthetic"] == 4
    assert runs["real"] <= 3


def test_small_mixes_meet_max_run_whenever_some_arrangement_does():
    for total, minority, max_run in itertools.product(range(1, 9), range(0, 5), (1, 2, 3)):
        if minority > total - minority:
            continue
        items = [(i, "real" if i < minority else "synthetic") for i in range(total)]
        achievable = any(
            max(longest_runs_of(["r" if i in chosen else "s" for i in range(total)])) <= max_run
            for chosen in map(set, itertools.combinations(range(total), minority))
        )
        for seed in range(4):
            order = rater_order(items, seed=seed, rater_index=0, max_run=max_run)
            runs = longest_runs(order, dict(items))
            assert (max(runs.values()) <= max_run) == achievable, (total, minority, max_run)


def longest_runs_of(sequence: list[str]) -> list[int]:
    return [len(list(group)) for _, group in itertools.groupby(sequence)]


def test_every_item_is_scored_once_after_the_warmups():
    order = rater_order(STUDY, seed=11, rater_index=2, warmup=WARMUP, retest_share=0.1)

    assert [e.item_id for e in order[:3]] == list(WARMUP)
    assert all(e.kind == "warmup" for e in order[:3])
    assert all(e.kind != "warmup" for e in order[3:])
    scored = Counter(e.item_id for e in order if e.kind == "scored")
    assert set(scored) == {item_id for item_id, _ in STUDY}
    assert set(scored.values()) == {1}


def test_retests_repeat_earlier_items_at_least_twenty_positions_later():
    order = rater_order(STUDY, seed=11, rater_index=1, warmup=WARMUP, retest_share=0.1)

    first_shown = {e.item_id: i for i, e in enumerate(order) if e.kind == "scored"}
    retests = [(i, e.item_id) for i, e in enumerate(order) if e.kind == "retest"]
    assert len(retests) == round(0.1 * len(STUDY))
    assert len({item_id for _, item_id in retests}) == len(retests)
    for position, item_id in retests:
        assert position - first_shown[item_id] >= 20
    retested_origins = Counter(dict(STUDY)[item_id] for _, item_id in retests)
    assert retested_origins == {"synthetic": 50, "real": 12}  # 62 split 4:1


def test_orders_are_reproducible_and_differ_between_raters():
    arguments = {"seed": 11, "warmup": WARMUP, "retest_share": 0.1}
    first = rater_order(STUDY, rater_index=0, **arguments)

    assert rater_order(list(reversed(STUDY)), rater_index=0, **arguments) == first
    assert rater_order(STUDY, rater_index=1, **arguments) != first
    assert rater_order(STUDY, rater_index=0, **(arguments | {"seed": 12})) != first


def test_bad_orders_are_refused():
    with pytest.raises(ValueError, match="once"):
        rater_order([(1, "real"), (1, "synthetic")], seed=1, rater_index=0)
    with pytest.raises(ValueError, match="warm-up"):
        rater_order([(1, "real")], seed=1, rater_index=0, warmup=[1])
    with pytest.raises(ValueError):
        rater_order([(1, "real")], seed=1, rater_index=0, max_run=0)
    with pytest.raises(ValueError):
        rater_order([(1, "real")], seed=1, rater_index=0, retest_share=1.5)
