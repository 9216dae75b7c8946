"""Live fragments (polled by htmx while a batch or run works) ask for a full page reload once
it has ended, so its report, gallery and artifacts appear without the user reloading."""

import pytest
from django.urls import reverse

from jobs.models import Job
from tests.factories import BatchFactory, make_user
from training.models import Run

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.mark.parametrize(
    ("state", "refresh"),
    [("generating", False), ("reporting", False), ("finished", True), ("cancelled", True)],
)
def test_batch_fragment_reloads_the_page_when_the_batch_ends(client, state, refresh):
    batch = BatchFactory(state=state)
    client.force_login(make_user("engineer"))
    url = reverse("generation:live", args=[batch.pk])
    response = client.get(url, headers=HTMX)
    assert response.status_code == 200
    assert (response.headers.get("HX-Refresh") == "true") is refresh
    assert "HX-Refresh" not in client.get(url).headers  # a plain GET is not htmx's poll


@pytest.mark.parametrize(
    ("state", "refresh"),
    [("queued", False), ("running", False), ("succeeded", True), ("failed", True)],
)
def test_run_fragment_reloads_the_page_when_the_run_ends(client, state, refresh):
    job = Job.objects.create(kind="training.run", queue="gpu", state=state)
    run = Run.objects.create(kind="textual_inversion", base_model="tiny", job=job)
    client.force_login(make_user("engineer"))
    response = client.get(reverse("training:live", args=[run.pk]), headers=HTMX)
    assert response.status_code == 200
    assert (response.headers.get("HX-Refresh") == "true") is refresh
