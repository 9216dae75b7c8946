"""The fairness chart's axis: chance (0.5) to 1, or 0 to 1 when something falls below chance."""

from types import SimpleNamespace

from training.views import _bars

GROUPS = ["I–II", "III–IV", "V–VI"]


def summary(pk, values, cis=None):
    return {
        "run": SimpleNamespace(pk=pk),
        "auroc_by_group": dict(zip(GROUPS, values, strict=True)),
        "auroc_ci_by_group": dict(zip(GROUPS, cis or [None] * 3, strict=True)),
    }


def comparison(baseline, *runs):
    return {"groups": GROUPS, "baseline": baseline, "runs": list(runs)}


def test_values_above_chance_use_the_chance_floor():
    chart = _bars(
        comparison(summary(1, [0.75, 1.0, None]), summary(2, [0.5, 0.9, 0.8])), height=100
    )
    assert chart["floor"] == 0.5
    heights = {(b["label"], b["group"]): b["h"] for b in chart["bars"]}
    assert heights[("run 1", "I–II")] == 50.0 and heights[("run 1", "III–IV")] == 100.0
    assert heights[("run 2", "I–II")] == 0.0
    assert ("run 1", "V–VI") not in heights  # undefined groups draw no bar


def test_a_value_below_chance_drops_the_floor_to_zero_and_stays_visible():
    chart = _bars(comparison(summary(1, [0.25, 0.6, 0.4]), summary(2, [0.7, 0.8, 0.9])), height=100)
    assert chart["floor"] == 0.0 and chart["chance_y"] == 50.0
    heights = {(b["label"], b["group"]): b["h"] for b in chart["bars"]}
    assert heights[("run 1", "I–II")] == 25.0 and heights[("run 1", "V–VI")] == 40.0


def test_an_interval_below_chance_also_drops_the_floor():
    chart = _bars(comparison(summary(1, [0.6, 0.7, 0.8], [[0.45, 0.7], None, None])), height=100)
    assert chart["floor"] == 0.0
    bar = next(b for b in chart["bars"] if b["group"] == "I–II")
    assert bar["ci"] == [55.0, 30.0]


def criteria_summary(gap, gap_ci, eod, eod_ci, dark=0.7, dark_ci=None):
    return {
        "auroc_gap": gap,
        "gap_ci": gap_ci,
        "equalized_odds_difference": eod,
        "eod_ci": eod_ci,
        "auroc_by_group": {"V–VI": dark},
        "auroc_ci_by_group": {"V–VI": dark_ci},
    }


def test_criteria_say_when_a_reduction_is_within_sampling_noise():
    from training.reports import NOISE_NOTE, criteria

    base = criteria_summary(0.30, [0.20, 0.40], 0.50, [0.45, 0.55])
    noisy = criteria(base, criteria_summary(0.15, [0.05, 0.25], 0.30, [0.25, 0.35], dark=0.8))
    assert noisy[0]["met"] is True and NOISE_NOTE in noisy[0]["note"]
    assert noisy[1]["met"] is True and noisy[1]["note"] == ""  # intervals apart
    clear = criteria(base, criteria_summary(0.15, [0.10, 0.19], 0.49, [0.40, 0.60]))
    assert NOISE_NOTE not in clear[0]["note"] and clear[1]["met"] is False
    assert NOISE_NOTE in clear[1]["note"]
    assert criteria(base, criteria_summary(0.15, None, 0.3, None))[0]["note"] == ""


def test_the_dark_skin_gain_is_flagged_when_its_intervals_overlap():
    from training.reports import NOISE_NOTE, criteria

    base = criteria_summary(0.3, None, 0.5, None, dark=0.60, dark_ci=[0.50, 0.70])
    close = criteria(base, criteria_summary(0.3, None, 0.5, None, dark=0.65, dark_ci=[0.55, 0.75]))[
        2
    ]
    apart = criteria(base, criteria_summary(0.3, None, 0.5, None, dark=0.85, dark_ci=[0.75, 0.95]))[
        2
    ]
    assert close["met"] is True and close["note"] == NOISE_NOTE
    assert apart["met"] is True and apart["note"] == ""
