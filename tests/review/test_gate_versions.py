"""Gate criteria versions in the app: new studies are judged under version 2 (rater quality and
the blinding audit count), a study created under version 1 is judged by version 1, and a stored
gate is what a closed study shows, never recomputed."""

import pytest

from review.models import Study, StudyState
from review.selectors import study_gate_report
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.study import study_create
from tests.review.conftest import open_study

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning"),
]


def rate_all(study, rater, seconds, score=7):
    while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
        rating_submit(token=current.token, rater=rater, score=score, seconds=seconds)


def test_new_studies_use_criteria_version_2(batch, raters):
    study = study_create(batch=batch, raters=raters, sample_size=8, seed=5, enqueue=False)
    assert study.criteria["version"] == 2
    assert study.criteria["too_fast_share_max"] == 0.2


def test_raters_clicking_through_fail_the_gate_by_name(batch, raters, lead):
    study = open_study(batch, raters)
    rate_all(study, raters[0], seconds=0.05)
    rate_all(study, raters[1], seconds=0.05)
    rate_all(study, raters[2], seconds=4.0)
    gate = study_close(study=study, user=lead).gate
    assert gate["criteria"]["version"] == 2 and gate["gate"]["passed"] is False
    assert [f["criterion"] for f in gate["gate"]["failing"]] == ["rater_quality"]
    reason = gate["gate"]["failing"][0]["reason"]
    assert "derm-1: 100% of ratings faster than 1.5 s" in reason and "derm-2" in reason
    assert "derm-3" not in reason
    # The blinding audit reached the gate: audited or, for an older audit, said not to be.
    blinding = gate["gate"]["blinding"]
    assert blinding["passed"] is True
    assert blinding["audited"] == ("encoding_failures" in gate["blinding_audit"])


def test_realistic_times_pass_under_version_2(batch, raters, lead):
    study = open_study(batch, raters)
    for rater in raters:
        rate_all(study, rater, seconds=3.0)
    gate = study_close(study=study, user=lead).gate
    assert gate["gate"]["passed"] is True and gate["gate"]["failing"] == []


def test_a_version_1_study_is_judged_by_version_1(batch, raters, lead):
    study = open_study(batch, raters, criteria={"version": 1})
    for rater in raters:
        rate_all(study, rater, seconds=0.05)
    gate = study_close(study=study, user=lead).gate
    assert gate["criteria"]["version"] == 1 and gate["gate"]["passed"] is True
    assert "rater_quality" not in gate["gate"] and "blinding" not in gate["gate"]


def test_a_closed_study_keeps_its_stored_gate(batch, raters):
    study = open_study(batch, raters, criteria={"version": 1})
    stored = {"criteria": {"version": 1}, "gate": {"passed": True, "mean": {"estimate": 6.1}}}
    Study.objects.filter(pk=study.pk).update(state=StudyState.CLOSED, gate=stored)
    assert study_gate_report(study=Study.objects.get(pk=study.pk)) == stored
