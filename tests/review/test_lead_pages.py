"""The lead's pages (issue 15): live fragments for a study's progress and a release's export,
a required confirmation on the final decisions, the lead's home panel and a batch's outcome."""

import pytest
from django.urls import reverse

from jobs.models import JobState
from jobs.runner import execute_job
from review.models import BatchRejection, Release, Study, StudyState
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve
from tests.factories import BatchFactory
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def rate(study, rater, n=None, score=7):
    done = 0
    while (n is None or done < n) and (
        current := rater_queue(study=study, rater=rater)["current"]
    ) is not None:
        rating_submit(token=current.token, rater=rater, score=score, seconds=3.0)
        done += 1


def test_the_study_fragment_counts_ratings_and_says_what_closing_does(client, batch, raters, lead):
    study = open_study(batch, raters)
    client.force_login(lead)
    url = reverse("review:live", args=[study.pk]) + "?state=open"
    page = client.get(url, headers=HTMX)
    assert "HX-Refresh" not in page.headers
    body = page.content.decode()
    per_rater = study.plan["items_per_rater"]
    assert f"0 of {3 * per_rater} ratings done" in body and 'hx-trigger="every 2s"' in body
    assert "3 of 3 raters not finished" in body and "fails criterion (d)" in body

    rate(study, raters[0], n=2)
    body = client.get(url, headers=HTMX).content.decode()
    assert f"2 of {3 * per_rater} ratings done" in body
    assert "<td>derm-1</td><td>2</td>" in body

    for rater in raters:
        rate(study, rater)
    body = client.get(url, headers=HTMX).content.decode()
    assert "All 3 raters finished" in body and "fails criterion (d)" not in body

    # Once closed elsewhere, the poll reloads the page (the gate sits outside the fragment),
    # and the fragment stops polling.
    study_close(study=study, user=lead)
    page = client.get(url, headers=HTMX)
    assert page.headers.get("HX-Refresh") == "true"
    assert "hx-trigger" not in page.content.decode()


@pytest.mark.parametrize("action", ["close", "approve", "reject"])
def test_a_final_decision_without_the_confirmation_changes_nothing(
    client, batch, raters, lead, action
):
    study = open_study(batch, raters)
    rate(study, raters[0], n=2)
    if action != "close":
        for rater in raters:
            rate(study, rater)
        study_close(study=study, user=lead)
    client.force_login(lead)
    url = reverse(f"review:{action}", args=[study.pk])
    data = {"note": "fine", "reason": "smeared"}
    before = Study.objects.get(pk=study.pk).state

    response = client.post(url, data, follow=True)
    assert "tick the box that confirms it first" in response.content.decode()
    assert Study.objects.get(pk=study.pk).state == before
    assert not Release.objects.exists() and not BatchRejection.objects.exists()

    client.post(url, {**data, "confirm": "yes"})
    if action == "close":
        assert Study.objects.get(pk=study.pk).state == StudyState.CLOSED
    elif action == "approve":
        assert Release.objects.filter(study=study).exists()
    else:
        assert BatchRejection.objects.get(batch=batch).reason == "smeared"


def test_the_study_page_asks_for_the_confirmation_and_states_the_outlook(
    client, batch, raters, lead
):
    study = open_study(batch, raters)
    rate(study, raters[1], n=1)
    client.force_login(lead)
    page = client.get(reverse("review:study", args=[study.pk])).content.decode()
    assert 'name="confirm" value="yes" required' in page and "closing is final" in page
    assert "closing now fails criterion (d)" in page and "(derm-1, derm-2, derm-3)" in page


def test_the_release_fragment_follows_the_export_until_it_is_written(client, batch, raters, lead):
    study = open_study(batch, raters)
    for rater in raters:
        rate(study, rater)
    study_close(study=study, user=lead)
    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    client.force_login(lead)
    url = reverse("review:release_live", args=[release.pk])
    body = client.get(url, headers=HTMX).content.decode()
    assert 'hx-trigger="every 2s"' in body and "queued" in body
    assert "download the zip" not in body

    assert execute_job(job_id=release.export_job_id) == JobState.SUCCEEDED
    body = client.get(url, headers=HTMX).content.decode()
    assert "download the zip" in body and "hx-trigger" not in body
    page = client.get(reverse("review:release", args=[release.pk])).content.decode()
    assert "download the zip" in page and "hx-trigger" not in page


def test_the_lead_home_lists_studies_releases_and_batches_awaiting_review(
    client, batch, raters, lead
):
    waiting = BatchFactory(state="finished", name="waiting-batch")
    BatchFactory(state="generating", name="running-batch")
    client.force_login(lead)
    page = client.get(reverse("accounts:home")).content.decode()
    assert "Awaiting review" in page and "waiting-batch" in page and "running-batch" not in page
    assert f"?batch={waiting.pk}" in page and "No study yet." in page

    study = open_study(batch, raters, name="Realism A")
    for rater in raters:
        rate(study, rater)
    study_close(study=study, user=lead)
    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    page = client.get(reverse("accounts:home")).content.decode()
    assert page.index("Review studies") < page.index("Synthetic data") < page.index("Recent jobs")
    assert "Realism A" in page and "passed" in page and ">released</a>" in page
    assert f"Release {release.pk}</a> of batch {batch.pk}" in page
    assert f"batch {batch.pk} ·" not in page.split("Awaiting review")[1].split("</p>")[0]


def test_the_batch_page_says_released_or_rejected(client, batch, raters, lead):
    client.force_login(lead)
    url = reverse("generation:batch", args=[batch.pk])
    assert "awaiting review" in client.get(url).content.decode()
    study = open_study(batch, raters)
    assert f"study {study.pk}</a> open for rating" in client.get(url).content.decode()
    for rater in raters:
        rate(study, rater, score=2)
    study_close(study=study, user=lead)
    client.post(reverse("review:reject", args=[study.pk]), {"reason": "smeared", "confirm": "yes"})
    page = client.get(url).content.decode()
    assert '<strong class="error">rejected</strong> by lead-1' in page and "smeared" in page
