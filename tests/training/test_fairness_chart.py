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


def paired_criterion(kind, threshold, base, cand, change, interval, state, why):
    return {
        "kind": kind,
        "threshold": threshold,
        "baseline": base,
        "candidate": cand,
        "change": change,
        "interval": interval,
        "state": state,
        "why": why,
        "undefined_share": 0.0,
    }


def test_a_met_reduction_reads_as_a_sentence_with_its_paired_interval():
    from training.fairness_verdicts import criterion_text

    c = paired_criterion("reduction", 0.4, 0.12, 0.05, 0.5833, [0.31, 0.79], "met", "above")
    assert criterion_text("gap", c) == (
        "gap 0.120 → 0.050, reduced by 58 % (95 % paired interval: a 31 % to 79 % reduction): "
        "met, the whole interval is above the 40 % reduction target"
    )


def test_a_worsening_reads_increased_never_reduced_by_a_negative_share():
    from training.fairness_verdicts import criterion_text

    c = paired_criterion("reduction", 0.3, 0.05, 0.20, -3.0, [-4.5, -1.2], "not met", "below")
    text = criterion_text("eod", c)
    assert text.startswith("equalized odds 0.050 → 0.200, increased by 300 %")
    assert "(95 % paired interval: a 120 % to 450 % increase)" in text
    assert "not met, the whole interval is at or below the 30 % reduction target" in text
    assert "-" not in text.replace("→", "")  # no "reduced by -300 %"


def test_an_interval_across_the_target_is_not_shown_and_says_why():
    from training.fairness_verdicts import criterion_text

    mixed = paired_criterion(
        "reduction", 0.4, 0.2, 0.15, 0.25, [-0.2, 0.6], "not shown", "straddles"
    )
    assert criterion_text("gap", mixed) == (
        "gap 0.200 → 0.150, reduced by 25 % (95 % paired interval: from a 20 % increase to a "
        "60 % reduction): not shown, the interval spans the 40 % reduction target, so this "
        "test set cannot tell"
    )
    gain = paired_criterion("gain", 0.0, 0.70, 0.74, 0.04, [-0.01, 0.09], "not shown", "straddles")
    assert criterion_text("dark", gain) == (
        "AUROC V–VI 0.700 → 0.740, +0.040 (95 % paired interval -0.010 to +0.090): not shown, "
        "the interval spans 0, so this test set cannot tell"
    )
