"""A pass with caveats as a lead reads it: the caveats stand under the verdict, the approval
confirmation names them, and the DATASHEET keeps them; a study's folder is never one an
earlier study left in storage."""

import pytest
from django.core.files.base import ContentFile
from django.utils.html import escape

from jobs.runner import execute_job
from review.models import Study, StudyItem
from review.services import study as study_services
from review.services.export import release_folder
from review.services.release import release_approve
from tests.review.test_gate_page import closed_study, page_of

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning"),
]


def test_a_small_passed_study_shows_its_caveats_and_the_approval_names_them(
    client, batch, raters, lead
):
    study = closed_study(batch, raters, lead)
    gate = study.gate["gate"]
    assert gate["passed"] is True
    caveats = {c["criterion"]: c["reason"] for c in gate["caveats"]}
    # A few synthetic images all rated 6-7: (b) and (c) hold on the estimate, not the bound;
    # two real controls cannot make the audit reach alpha 0.01.
    assert {"median_share", "low_share", "blinding"} <= set(caveats)
    assert study.gate["blinding_audit"]["can_detect"] is False
    page = page_of(client, lead, study)
    assert "read the caveats below before approving" in page
    top = page.index('data-testid="gate-caveats"')
    assert top < page.index('data-testid="criterion"')
    for reason in caveats.values():
        assert page.index(escape(reason)) > top
    # Each criterion row with a caveat says so beside "met".
    assert page.count('<span class="meta">(caveat)</span>') == len(caveats)
    assert "(f) the served files do not give origin away" in page
    assert f"I have read the gate's {len(caveats)} caveats." in page

    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    assert execute_job(job_id=release.export_job_id) == "succeeded"
    sheet = (release_folder(release) / "DATASHEET.md").read_text()
    assert f"- caveat: (f) blinding: {caveats['blinding']}" in sheet


def test_a_study_identity_never_names_a_folder_left_in_storage(batch, raters, monkeypatch):
    storage = StudyItem._meta.get_field("derivative").storage
    left_behind = "study-99-aaaaaaaaaaaa"
    storage.save(f"review/{left_behind}/old.png", ContentFile(b"x"))
    drawn = iter([left_behind, "study-99-bbbbbbbbbbbb"])
    monkeypatch.setattr(study_services, "new_identity", lambda prefix, pk: next(drawn))
    study = study_services.study_create(batch=batch, raters=raters, sample_size=8, enqueue=False)
    assert study.identity == "study-99-bbbbbbbbbbbb"


def test_the_design_warns_when_the_controls_are_too_few_for_the_audit(client, batch, raters, lead):
    from tests.review.conftest import open_study

    study = open_study(batch, raters)  # 8 synthetic images, 2 real controls
    page = page_of(client, lead, study)
    assert (
        "With 2 real controls beside 8 synthetic images the blinding audit cannot detect a "
        "leak, even a perfect one: at least 4 are needed." in page
    )
    enough = open_study(batch, raters, control_ratio=0.5)
    assert enough.plan["controls"] >= 4, enough.plan
    assert 'data-testid="audit-power"' not in page_of(client, lead, enough)
