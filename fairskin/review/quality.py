"""Criteria of gate version 2 beyond the ratings themselves: (e) the raters' quality and (f) the
blinding audit, and the list of failing criteria with their reasons that leads the gate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fairskin.review.criteria import GateCriteria
from fairskin.review.study import Study

_LABELS = {
    "mean": "(a) mean rating",
    "median_share": "(b) share of images with a median rating >= {median_at_least}",
    "low_share": "(c) share of images with a rating below {low_below}",
    "raters_finished": "(d) every rater finished",
    "mean_per_fst": "(a) mean rating within each skin type",
    "rater_quality": "(e) rater quality",
    "blinding": "(f) blinding",
}


def rater_quality(
    study: Study,
    criteria: GateCriteria,
    test_retest: Mapping[str, Mapping[str, Any]],
    names: Mapping[str, str],
) -> dict[str, Any]:
    """Per rater: the share of scored ratings faster than the too-fast limit and the mean
    absolute test-retest difference, each against its limit. `names` label raters in reasons."""
    raters: dict[str, Any] = {}
    failing: list[str] = []
    for rater in study.raters:
        seconds = np.array([r.seconds for r in study.scored_by[rater]], dtype=float)
        problems: list[str] = []
        fast: dict[str, Any] = {"share": None, "limit": criteria.too_fast_share_max, "why": None}
        if seconds.size:
            fast["share"] = float(np.mean(seconds < criteria.too_fast_seconds))
            if fast["share"] > criteria.too_fast_share_max:
                problems.append(
                    f"{fast['share']:.0%} of ratings faster than {criteria.too_fast_seconds:g} s "
                    f"(limit {criteria.too_fast_share_max:.0%})"
                )
        else:
            fast["why"] = "no scored ratings"
        pairs = test_retest.get(rater, {})
        retest: dict[str, Any] = {
            "n_pairs": int(pairs.get("n_pairs", 0)),
            "mean_abs_difference": pairs.get("mean_abs_difference"),
            "limit": criteria.retest_mad_max,
            "why": None,
        }
        if retest["n_pairs"] < criteria.retest_min_pairs:
            retest["why"] = (
                f"not judged: {retest['n_pairs']} repeated rating(s), "
                f"needs at least {criteria.retest_min_pairs}"
            )
        elif retest["mean_abs_difference"] > criteria.retest_mad_max:
            problems.append(
                f"repeats differ by {retest['mean_abs_difference']:.2f} points on average "
                f"(limit {criteria.retest_mad_max:g})"
            )
        raters[rater] = {
            "too_fast": fast,
            "test_retest": retest,
            "problems": problems,
            "passed": not problems,
        }
        if problems:
            failing.append(f"{names.get(rater, rater)}: {'; '.join(problems)}")
    return {
        "too_fast_seconds": criteria.too_fast_seconds,
        "raters": raters,
        "passed": not failing,
        "why": "; ".join(failing) or None,
    }


def blinding_criterion(audit: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fails when the audit found encoding-chain signals that separate the origins; an audit
    without that finding (or none at all) is "not audited", which does not fail the gate."""
    if audit is None:
        return {"audited": False, "failures": [], "passed": True, "why": "not audited: no audit"}
    failures = audit.get("encoding_failures")
    if failures is None:
        return {
            "audited": False,
            "failures": [],
            "passed": True,
            "why": "not audited: the blinding audit has no encoding-chain check",
        }
    failures = [str(reason) for reason in failures]
    return {
        "audited": True,
        "failures": failures,
        "passed": not failures,
        "why": "; ".join(failures) or None,
    }


def failing_criteria(gate: Mapping[str, Any], criteria: GateCriteria) -> list[dict[str, str]]:
    """The criteria that did not pass, in the gate's order, each with its reason."""
    failing = []
    for name, label in _LABELS.items():
        entry = gate.get(name)
        if not isinstance(entry, Mapping) or entry.get("passed", True):
            continue
        failing.append(
            {
                "criterion": name,
                "label": label.format(**criteria.to_dict()),
                "reason": _reason(name, entry),
            }
        )
    return failing


def _reason(name: str, entry: Mapping[str, Any]) -> str:
    if name == "raters_finished":
        return "not finished: " + ", ".join(entry["unfinished_names"])
    if name == "mean_per_fst":
        if entry.get("why"):
            return str(entry["why"])
        groups = entry["groups"]
        return "; ".join(
            f"skin type {fst}: {_reason('mean', g)}" for fst, g in groups.items() if not g["passed"]
        )
    if "judged" in entry:
        if entry["judged"] is None:
            return str(entry.get("why") or "not computed")
        on = {"estimate": "estimate", "ci_low": "lower bound", "ci_high": "upper bound"}
        return (
            f"{on[entry['judged_on']]} {entry['judged']:.3g} is not "
            f"{entry['comparison']} {entry['limit']:g}"
        )
    return str(entry.get("why") or "failed")
