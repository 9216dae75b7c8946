"""The gate of a closed study as a lead reads it (issue 15): failing criteria and their reasons
first, approval not offered while any fails, charts, the full statistics as tables with raters
by username and counts as integers, no JSON dump; a stored version-1 report still renders."""

import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from review.models import Release, Study, StudyState
from review.services.gate import study_close
from tests.review.conftest import open_study
from tests.review.test_gate_versions import rate_all

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning"),
]


def closed_study(batch, raters, lead, *, scores=(6, 6, 7), seconds=(3.0, 3.0, 3.0)):
    study = open_study(batch, raters)
    for rater, score, secs in zip(raters, scores, seconds, strict=True):
        rate_all(study, rater, seconds=secs, score=score)
    return study_close(study=study, user=lead)


def page_of(client, lead, study) -> str:
    client.force_login(lead)
    response = client.get(reverse("review:study", args=[study.pk]))
    assert response.status_code == 200
    return response.content.decode()


def assert_readable(page: str) -> None:
    assert '<pre class="json">' not in page and '"criteria":' not in page
    for table in ("table-synthetic-vs-real", "table-agreement", "table-raters", "table-audit"):
        assert f'data-testid="{table}"' in page
    assert not re.search(r">\s*\d+\.0\s*<", page), "a count shown as a float"


def test_a_failed_gate_lists_its_reasons_first_and_offers_no_approval(client, batch, raters, lead):
    study = closed_study(batch, raters, lead, scores=(5, 6, 3), seconds=(0.05, 4.0, 4.0))
    failing = study.gate["gate"]["failing"]
    assert {f["criterion"] for f in failing} == {"mean", "rater_quality"}
    page = page_of(client, lead, study)
    assert 'Gate: <span class="error">not passed' in page
    top = page.index('data-testid="gate-failing"')
    assert top < page.index('data-testid="criterion"') < page.index('data-testid="histogram"')
    for f in failing:
        assert page.index(escape(f["reason"])) > top
    assert "derm-1: 100% of ratings faster than 1.5 s" in page
    # Approval is not offered, and the page says why; the server still refuses a post.
    assert 'data-testid="approve"' not in page and 'data-testid="approval-refused"' in page
    assert "Approval is refused, so it is not offered: 2 criteria" in page
    client.post(reverse("review:approve", args=[study.pk]), {"confirm": "yes"})
    assert not Release.objects.exists()
    # Raters by username in the flagged list and the behaviour table, never by id.
    flagged = page[page.index('data-testid="flagged-raters"') :]
    assert "<strong>derm-1</strong>" in flagged[:300]
    assert page.count('data-testid="chart-flag"') == 1
    per_rater = page[page.index('data-testid="chart-per-rater"') :]
    assert (
        per_rater.index("derm-1")
        < per_rater.index("flagged: 100% of ratings")
        < (per_rater.index("derm-2"))
    )
    table = page[page.index('data-testid="table-raters"') :]
    table = table[: table.index("</table>")]
    assert all(f"<td>{r.username}" in table for r in raters)
    assert not re.search(rf"<td>{raters[0].pk}\b", table)
    assert_readable(page)


def test_a_passed_gate_says_so_and_offers_approval(client, batch, raters, lead):
    study = closed_study(batch, raters, lead)
    assert study.gate["gate"]["passed"] is True
    page = page_of(client, lead, study)
    assert 'Gate: <span class="ok">passed' in page and 'data-testid="gate-passed"' in page
    assert 'data-testid="gate-failing"' not in page and 'data-testid="approve"' in page
    assert page.count('data-testid="histogram"') == 1 + len(raters)
    assert 'data-testid="chart-skin-types"' in page
    assert "No encoding failures" in page
    # Each diagnosis x skin type stratum with the interval of its mean (version 2).
    strata = study.gate["breakdown"]["by_stratum"]
    assert strata and page.count('data-testid="stratum-row"') == len(strata)
    for group in strata.values():
        if group["mean_interval"]["low"] is not None:
            low, high = group["mean_interval"]["low"], group["mean_interval"]["high"]
            assert f"{low:.2f} – {high:.2f}" in page
    assert_readable(page)


def test_the_audit_records_the_one_served_content_type(batch, raters, lead):
    audit = closed_study(batch, raters, lead).gate["blinding_audit"]
    assert audit["content_types"] == ["image/png"] and audit["identical_content_type"] is True


VERSION_1 = {
    "criteria": {"version": 1, "mean_min": 5.0, "use_interval": True},
    "counts": {"items": {"synthetic": 8.0, "real": 2.0}, "raters": 3.0},
    "gate": {
        "passed": False,
        "mean": {
            "estimate": 4.2,
            "ci_low": 3.9,
            "ci_high": 4.5,
            "judged_on": "ci_low",
            "judged": 3.9,
            "comparison": ">",
            "limit": 5.0,
            "passed": False,
            "why": None,
        },
        "raters_finished": {
            "n_raters": 3.0,
            "n_finished": 2.0,
            "unfinished": ["derm-2"],
            "passed": False,
        },
    },
    "breakdown": {"by_fst": {"5": {"n_items": 5.0, "n_rated_items": 5.0, "mean": 4.1}}},
    "raters": {"7": {"n_scored": 10.0, "score_counts": {"4": 6.0, "5": 4.0}, "why": None}},
    "agreement": {"krippendorff_alpha_ordinal": {"value": None, "why": "one rater only"}},
    "synthetic_vs_real": {"auc_pooled": {"value": 0.61}},
    "blinding_audit": {
        "size_auc": {"value": 0.55},
        "identical_dimensions": True,
        "identical_format": True,
    },
}


def test_a_stored_version_1_report_still_renders(client, batch, raters, lead):
    study = open_study(batch, raters, criteria={"version": 1})
    Study.objects.filter(pk=study.pk).update(state=StudyState.CLOSED, gate=VERSION_1)
    page = page_of(client, lead, Study.objects.get(pk=study.pk))
    assert 'Gate: <span class="error">not passed' in page
    reasons = page[page.index('data-testid="gate-failing"') : page.index('data-testid="criterion"')]
    assert "(a) mean rating of synthetic images" in reasons and "3.9 is not &gt; 5" in reasons
    assert "(d) every rater finished" in reasons and "derm-2" in reasons
    assert 'data-testid="approve"' not in page
    assert "one rater only" in page and "file length (bytes)" in page
    assert_readable(page)
