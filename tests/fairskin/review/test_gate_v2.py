"""Gate version 2: no crash and no silent gap on small studies, rater quality and blinding as
criteria, the failing criteria first with their reasons, and version 1 left as it was."""

import json

import pytest

from fairskin.review.gate import GateCriteria, gate_report
from fairskin.review.study import Rating, ReviewItem

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")


def make(rows, raters=("a", "b", "c"), seconds=5.0):
    """rows: (item id, origin, one score per rater or None); `seconds` per rater or for all."""
    per_rater = seconds if isinstance(seconds, dict) else dict.fromkeys(raters, seconds)
    items, ratings, position = [], [], dict.fromkeys(raters, 0)
    for item_id, origin, scores in rows:
        items.append(ReviewItem(item_id, origin, "mel", 1 + len(items) % 6))
        for rater, score in zip(raters, scores, strict=True):
            if score is not None:
                ratings.append(Rating(rater, item_id, score, per_rater[rater], position[rater]))
                position[rater] += 1
    return items, ratings


def run(items, ratings, criteria=None, *, raters=("a", "b", "c"), n_boot=20, **kwargs):
    report = gate_report(
        items,
        ratings,
        criteria or GateCriteria(),
        raters=dict.fromkeys(raters, True) | kwargs.pop("finished", {}),
        n_boot=n_boot,
        **kwargs,
    )
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    return report


# Keys that are None by design, not for want of data.
_NULLABLE = {"why", "mean_per_fst", "label"}


def silent_gaps(node, path="report"):
    """Paths of None statistics whose object carries no "why"."""
    gaps = []
    if isinstance(node, dict):
        missing = [k for k, v in node.items() if v is None and k not in _NULLABLE]
        if missing and not node.get("why"):
            gaps.append(f"{path}: {missing}")
        for key, value in node.items():
            gaps += silent_gaps(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            gaps += silent_gaps(value, f"{path}[{index}]")
    return gaps


DEGENERATE = {
    "2 items x 2 raters": (
        [("s0", "synthetic", (5, 6)), ("s1", "synthetic", (6, 4))],
        ("a", "b"),
    ),
    "1 item": ([("s0", "synthetic", (5, 6, 7))], ("a", "b", "c")),
    "all identical": (
        [(f"s{i}", "synthetic", (5, 5, 5)) for i in range(6)] + [("r0", "real", (5, 5, 5))],
        ("a", "b", "c"),
    ),
    "a rater with no ratings": (
        [(f"s{i}", "synthetic", (6, 5, None)) for i in range(6)] + [("r0", "real", (6, 6, None))],
        ("a", "b", "c"),
    ),
    "nothing rated": ([("s0", "synthetic", (None, None))], ("a", "b")),
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("n_boot", [0, 20])
@pytest.mark.parametrize("case", list(DEGENERATE))
def test_small_studies_report_every_statistic_or_why_not(case, n_boot, version):
    rows, raters = DEGENERATE[case]
    report = run(*make(rows, raters), GateCriteria(version=version), raters=raters, n_boot=n_boot)
    assert silent_gaps(report) == []
    assert isinstance(report["gate"]["passed"], bool)


def test_two_by_two_gives_icc_reasons_instead_of_crashing():
    rows, raters = DEGENERATE["2 items x 2 raters"]
    icc = run(*make(rows, raters), raters=raters)["agreement"]["icc"]
    assert "at least 5 ratings" in icc["why"]
    assert all("at least 5 ratings" in icc[name]["why"] for name in ("ICC2", "ICC3", "ICC3k"))


def test_icc3_undefined_says_why():
    # Every item rated 5 by one rater and 6 by the other: no variance between items and no
    # residual, so ICC3 = 0 / 0 while ICC2 (rater variance in its denominator) is 0.
    rows = [(f"s{i}", "synthetic", (5, 6)) for i in range(4)]
    icc = run(*make(rows, ("a", "b")), raters=("a", "b"))["agreement"]["icc"]
    assert icc["ICC2"]["value"] == pytest.approx(0.0)
    assert icc["ICC3"]["value"] is None and "denominator is zero" in icc["ICC3"]["why"]


# --- (e) rater quality ---------------------------------------------------------------------


GOOD = [(f"s{i}", "synthetic", (6, 6, 6)) for i in range(20)]


def test_two_raters_clicking_through_fail_the_gate_by_name():
    items, ratings = make(GOOD, seconds={"a": 0.05, "b": 0.05, "c": 4.0})
    report = run(items, ratings, rater_names={"a": "derm1", "b": "derm2", "c": "derm3"})
    gate = report["gate"]
    assert gate["passed"] is False
    assert list(gate)[:2] == ["failing", "passed"]
    assert [f["criterion"] for f in gate["failing"]] == ["rater_quality"]
    reason = gate["failing"][0]["reason"]
    assert "derm1: 100% of ratings faster than 1.5 s" in reason and "derm2" in reason
    assert "derm3" not in reason
    assert gate["rater_quality"]["raters"]["c"] == {
        "too_fast": {"share": 0.0, "limit": 0.2, "why": None},
        "test_retest": {
            "n_pairs": 0,
            "mean_abs_difference": None,
            "limit": 1.5,
            "why": "not judged: 0 repeated rating(s), needs at least 5",
        },
        "problems": [],
        "passed": True,
    }
    # Version 1 has no such criterion: the same study passes.
    assert run(items, ratings, GateCriteria(version=1))["gate"]["passed"] is True


def test_too_fast_share_at_the_limit_passes_and_above_it_fails():
    # 4 of 20 ratings (20%) below 1.5 s is not more than 20%; 5 of 20 is.
    items, ratings = make(GOOD)
    fast = [r for r in ratings if r.rater_id == "a"]
    others = [r for r in ratings if r.rater_id != "a"]

    def with_fast(n):
        quick = [Rating(r.rater_id, r.item_id, r.score, 1.0, r.position) for r in fast[:n]]
        return others + quick + fast[n:]

    assert run(items, with_fast(4))["gate"]["rater_quality"]["passed"] is True
    result = run(items, with_fast(5))["gate"]["rater_quality"]
    assert result["raters"]["a"]["too_fast"]["share"] == 0.25 and result["passed"] is False


def retests(rater, pairs):
    """Repeat ratings of s0, s1, ... by `rater` with these scores."""
    return [Rating(rater, f"s{i}", score, 5.0, 100 + i, "retest") for i, score in enumerate(pairs)]


def test_test_retest_limit_needs_enough_repeats():
    items, ratings = make(GOOD)
    # First ratings are all 6: repeats of 4 differ by 2 on average.
    failing = run(items, ratings + retests("b", [4] * 5))["gate"]
    assert failing["rater_quality"]["raters"]["b"]["test_retest"]["mean_abs_difference"] == 2.0
    assert "b: repeats differ by 2.00 points" in failing["failing"][0]["reason"]
    few = run(items, ratings + retests("b", [4] * 4))["gate"]["rater_quality"]
    assert few["passed"] is True
    assert few["raters"]["b"]["test_retest"]["why"].startswith("not judged: 4 repeated")
    close = run(items, ratings + retests("b", [5, 6, 7, 5, 6]))["gate"]["rater_quality"]
    assert close["passed"] is True


# --- (f) blinding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audit", "passed", "audited", "why"),
    [
        ({"encoding_failures": []}, True, True, None),
        (
            {"encoding_failures": ["quantization tables separate the origins (p = 0.001)"]},
            False,
            True,
            "quantization tables separate the origins (p = 0.001)",
        ),
        ({"size_auc": {"value": 0.5}}, True, False, "not audited: the blinding audit has no"),
        (None, True, False, "not audited: no audit"),
    ],
)
def test_blinding_audit_gates_on_encoding_failures(audit, passed, audited, why):
    gate = run(*make(GOOD), blinding=audit)["gate"]
    assert gate["blinding"]["passed"] is passed and gate["blinding"]["audited"] is audited
    assert gate["passed"] is passed
    if why is None:
        assert gate["blinding"]["why"] is None
    else:
        assert gate["blinding"]["why"].startswith(why)
    if not passed:
        assert gate["failing"] == [
            {
                "criterion": "blinding",
                "label": "(f) blinding",
                "reason": "quantization tables separate the origins (p = 0.001)",
            }
        ]


# --- failing criteria first ----------------------------------------------------------------


def test_failing_lists_every_failed_criterion_in_order_with_its_reason():
    rows = [(f"s{i}", "synthetic", (2, 3, 4)) for i in range(10)]
    report = run(
        *make(rows),
        GateCriteria(use_interval=True, per_fst=True),
        finished={"c": False},
        rater_names={"c": "derm3"},
        blinding={"encoding_failures": ["chroma subsampling differs"]},
    )
    failing = report["gate"]["failing"]
    assert [f["criterion"] for f in failing] == [
        "mean",
        "median_share",
        "low_share",
        "raters_finished",
        "mean_per_fst",
        "blinding",
    ]
    reasons = {f["criterion"]: f["reason"] for f in failing}
    assert reasons["mean"].startswith("lower bound ") and reasons["mean"].endswith("is not > 5")
    assert reasons["low_share"].startswith("upper bound 1 is not < 0.1")
    assert reasons["raters_finished"] == "not finished: derm3"
    assert reasons["mean_per_fst"].startswith("skin type 1: lower bound")
    assert failing[1]["label"] == "(b) share of images with a median rating >= 4"
    assert run(*make(GOOD))["gate"]["failing"] == []


def test_criteria_version_1_keeps_its_report():
    report = run(*make(GOOD), GateCriteria(version=1), blinding={"encoding_failures": ["x"]})
    assert "rater_quality" not in report["gate"] and "blinding" not in report["gate"]
    assert report["gate"]["passed"] is True
    assert report["bootstrap"]["gate_intervals"].startswith("bootstrap percentile")


def test_every_group_and_stratum_shows_the_bounds_of_its_mean_in_version_2():
    rows = [(f"s{i}", "synthetic", (4 + i % 3, 5, 3 + i % 4)) for i in range(12)]
    items, ratings = make(rows + [("r0", "real", (6, 6, 6))])
    breakdown = run(items, ratings)["breakdown"]
    # make() gives skin types 1-6 in turn and one diagnosis: strata are "mel · FST n".
    assert set(breakdown["by_stratum"]) == {f"mel · FST {f}" for f in range(1, 7)}
    for groups in (breakdown["by_fst"], breakdown["by_diagnosis"], breakdown["by_stratum"]):
        for group in groups.values():
            interval = group["mean_interval"]
            assert interval["low"] <= group["mean"] <= interval["high"]
            assert interval["why"] is None
    one_image = make([("s0", "synthetic", (5, 6, 7)), ("r0", "real", (6, 6, 6))])
    lonely = run(*one_image)["breakdown"]["by_fst"]
    assert lonely["1"]["mean_interval"] == {
        "low": None,
        "high": None,
        "why": "a bound needs at least 2 rated images",
    }
    v1 = run(items, ratings, GateCriteria.from_dict({"version": 1}))["breakdown"]
    assert all("mean_interval" not in g for g in v1["by_fst"].values())
