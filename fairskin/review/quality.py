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
    caveat = None
    if audit.get("can_detect") is False:  # audits before version 2.1 do not say: no caveat
        n_files = audit.get("n_files") or {}
        needed = audit.get("real_needed")
        caveat = (
            f"the blinding audit cannot detect a leak with {n_files.get('real', 0)} real and "
            f"{n_files.get('synthetic', 0)} synthetic files: even a signal that separates them "
            f"perfectly reaches p {audit.get('smallest_p', 1):.3f}, not below alpha "
            f"{audit.get('alpha')}"
            + (f"; at least {needed} real controls are needed" if needed else "")
        )
    return {
        "audited": True,
        "failures": failures,
        "passed": not failures,
        "can_detect": audit.get("can_detect"),
        "caveat": caveat,
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


def _thin(entry: Mapping[str, Any]) -> str | None:
    """Why a criterion that passed on its point estimate is not shown by its bound (None: it
    is, or it was judged on the bound, or it has no bound)."""
    if not entry.get("passed") or entry.get("judged_on") != "estimate":
        return None
    greater = entry.get("comparison") == ">"
    bound = entry.get("ci_low") if greater else entry.get("ci_high")
    if bound is None:
        return "it has no bound to check the estimate against"
    limit = entry["limit"]
    if (bound > limit) if greater else (bound < limit):
        return None
    side = "lower" if greater else "upper"
    return (
        f"the estimate {entry['estimate']:.3f} meets the limit, but its 97.5% {side} bound "
        f"{bound:.3f} does not: the study is too small or too close to the limit to show it"
    )


def gate_caveats(gate: Mapping[str, Any], criteria: GateCriteria) -> list[dict[str, str]]:
    """What a lead must read beside a pass: criteria met on their point estimate only (the
    criteria's `use_interval` off) and a blinding audit that could not have found a leak.
    They do not fail the gate; they say how far its "passed" reaches."""
    caveats = []
    for name in ("mean", "median_share", "low_share"):
        entry = gate.get(name)
        reason = _thin(entry) if isinstance(entry, Mapping) else None
        if reason:
            label = _LABELS[name].format(**criteria.to_dict())
            caveats.append({"criterion": name, "label": label, "reason": reason})
    per_fst = gate.get("mean_per_fst")
    if isinstance(per_fst, Mapping):
        thin = sorted(fst for fst, g in (per_fst.get("groups") or {}).items() if _thin(g))
        if thin:
            caveats.append(
                {
                    "criterion": "mean_per_fst",
                    "label": _LABELS["mean_per_fst"],
                    "reason": "met on the point estimate only for skin type(s) " + ", ".join(thin),
                }
            )
    blinding = gate.get("blinding")
    if isinstance(blinding, Mapping) and blinding.get("caveat"):
        caveats.append(
            {"criterion": "blinding", "label": _LABELS["blinding"], "reason": blinding["caveat"]}
        )
    return caveats
