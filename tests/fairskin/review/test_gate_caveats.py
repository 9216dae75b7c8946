"""What a pass does not show: criteria met on their point estimate whose bound does not clear
the limit, and a blinding audit too small to have found a leak, are caveats beside the gate's
result (they do not fail it), and the audit says how many real controls it needs."""

import math

import numpy as np
import pytest

from fairskin.review.audit import (
    blinding_audit,
    permutation_auc,
    real_files_needed,
    smallest_reachable_p,
)
from fairskin.review.gate import GateCriteria

from .test_audit import file, origins_for
from .test_gate_v2 import make, run

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")


@pytest.mark.parametrize(("n_real", "n_synthetic"), [(1, 8), (2, 10), (3, 10), (2, 4), (5, 5)])
def test_smallest_reachable_p_is_what_a_perfect_separation_gets(n_real, n_synthetic):
    expected = smallest_reachable_p(n_real, n_synthetic, 4000)
    scores = list(range(100, 100 + n_real)) + list(range(n_synthetic))  # real all highest
    observed = [
        permutation_auc(origins_for(n_real, n_synthetic), scores, n_permutations=4000, seed=s)
        for s in range(5)
    ]
    assert all(o["value"] == 1.0 for o in observed)
    mean_p = float(np.mean([o["p_value"] for o in observed]))
    # Binomial error of 5 x 4000 shuffles around the expected tie share.
    q = min(1.0, 2 / math.comb(n_real + n_synthetic, n_real))
    assert abs(mean_p - expected) <= 4 * math.sqrt(q * (1 - q) / 20_000) + 1e-3


def test_real_files_needed_is_the_smallest_count_that_reaches_alpha():
    needed = real_files_needed(10, 0.01, 2000)
    assert needed == 3  # C(13, 3) = 286: 2/286 < 0.01; C(12, 2) = 66: 2/66 > 0.01
    assert smallest_reachable_p(needed, 10, 2000) < 0.01
    assert smallest_reachable_p(needed - 1, 10, 2000) >= 0.01
    assert real_files_needed(10, 0.01, 50) is None  # 50 shuffles never reach p < 0.01


def test_an_audit_of_two_controls_says_it_cannot_detect_and_the_gate_says_so():
    small = [file("real", 787_072), file("real", 787_072)] + [
        file("synthetic", 787_072) for _ in range(10)
    ]
    audit = blinding_audit(small)
    assert audit["encoding_failures"] == [] and audit["can_detect"] is False
    assert audit["real_needed"] == 3
    gate = run(*make(GOOD_40), blinding=audit)["gate"]
    assert gate["passed"] is True and gate["failing"] == []
    (caveat,) = [c for c in gate["caveats"] if c["criterion"] == "blinding"]
    assert "cannot detect a leak with 2 real and 10 synthetic files" in caveat["reason"]
    assert "at least 3 real controls" in caveat["reason"]

    enough = small + [file("real", 787_072) for _ in range(3)]
    audit = blinding_audit(enough)
    assert audit["can_detect"] is True
    gate = run(*make(GOOD_40), blinding=audit)["gate"]
    assert not [c for c in gate["caveats"] if c["criterion"] == "blinding"]


GOOD_40 = [(f"s{i}", "synthetic", (6, 6, 6)) for i in range(40)]
GOOD_10 = GOOD_40[:10]


def test_a_small_study_passes_on_estimates_with_caveats_a_large_one_without():
    small = run(*make(GOOD_10))["gate"]
    assert small["passed"] is True
    # 10 images all with median 6: (b)'s Clopper-Pearson lower bound 0.025**(1/10) = 0.69 < 0.9,
    # and (c)'s upper bound 1 - 0.69 = 0.31 > 0.10: the point estimates alone meet them.
    caveats = {c["criterion"]: c["reason"] for c in small["caveats"]}
    assert set(caveats) == {"median_share", "low_share"}
    assert "0.692 does not" in caveats["median_share"]
    assert "upper bound 0.308" in caveats["low_share"]

    large = run(*make(GOOD_40))["gate"]  # 0.025**(1/40) = 0.912 > 0.9
    assert large["passed"] is True and large["caveats"] == []


def test_judged_on_the_bound_there_is_no_caveat_only_a_verdict():
    gate = run(*make(GOOD_10), GateCriteria(use_interval=True))["gate"]
    assert gate["passed"] is False and gate["caveats"] == []
    assert {f["criterion"] for f in gate["failing"]} == {"median_share", "low_share"}


def test_per_skin_type_means_met_on_estimates_only_are_named():
    # Two images per skin type; type 1's two differ (means 5.33 and 6), so its t-bound with one
    # degree of freedom falls far below 5, while every other type's images agree exactly.
    scores = {0: (6, 4, 6), 6: (7, 5, 6)}
    rows = [(f"s{i}", "synthetic", scores.get(i, (6, 5, 6))) for i in range(12)]
    gate = run(*make(rows), GateCriteria(per_fst=True, mean_min=5.0))["gate"]
    assert gate["mean_per_fst"]["passed"] is True
    (caveat,) = [c for c in gate["caveats"] if c["criterion"] == "mean_per_fst"]
    assert caveat["reason"].startswith("met on the point estimate only for skin type(s) 1")


def test_version_1_reports_have_no_caveats():
    assert run(*make(GOOD_10), GateCriteria(version=1))["gate"]["caveats"] == []
