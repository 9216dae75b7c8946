"""Issue 16: a release's page leads an engineer on to a classifier launch with the release's
images preselected as the synthetic data (and the real datasets its model was trained on);
people who cannot launch runs see no such link."""

import html
import re

import pytest
from django.urls import reverse

from review.models import Study
from review.services.gate import study_close
from review.services.rating import rater_queue, rating_submit
from review.services.release import release_approve
from tests.factories import make_user
from tests.review.conftest import open_study

pytestmark = pytest.mark.django_db


def selected(text: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', text, re.S).group(1)
    return [v for v in re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', select) if v]


def test_a_release_links_to_a_classifier_launch_on_its_images(batch, raters, lead, client):
    lora = batch.model_run
    lora.selection = {"datasets": ["real-clinic"]}
    lora.save(update_fields=["selection"])
    study = open_study(batch, raters)
    for rater in raters:
        while (current := rater_queue(study=study, rater=rater)["current"]) is not None:
            rating_submit(token=current.token, rater=rater, score=7, seconds=3.0)
    study_close(study=study, user=lead)
    release = release_approve(study=Study.objects.get(pk=study.pk), user=lead, enqueue=False)
    url = reverse("review:release", args=[release.pk])

    client.force_login(make_user("engineer"))
    text = client.get(url).content.decode()
    link = re.search(
        r'data-testid="release-next"><a class="button primary" href="([^"]+)">([^<]+)<', text
    )
    assert link and link.group(2).startswith("Train a classifier on this release")
    href = html.unescape(link.group(1))
    assert href == (
        f"{reverse('admin:training_run_launch')}?kind=classifier"
        f"&synthetic_datasets={batch.dataset.name}&datasets=real-clinic"
    )
    launch = client.get(href).content.decode()
    assert selected(launch, "kind") == ["classifier"]
    assert selected(launch, "synthetic_datasets") == [batch.dataset.name]
    assert selected(launch, "datasets") == ["real-clinic"]
    assert "preselect-problems" not in launch

    client.force_login(lead)  # the lead approves releases but launches no training
    assert 'data-testid="release-next"' not in client.get(url).content.decode()
