"""What the API answers for downloads and the fairness comparison is what the pages answer:
the same views serve both (issue 22), whatever store the files come from."""

from __future__ import annotations

import itertools
import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tokens import token_create
from jobs.models import JobState
from tests.factories import JobFactory, RunFactory, make_user
from tests.training.test_fairness_verdicts_page import classifier_run, scored

pytestmark = pytest.mark.django_db
NAMES = itertools.count()


def token_client(user) -> APIClient:
    _, text = token_create(user=user, name=f"reads {next(NAMES)}", expires_in_days=7)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return api


def test_fairness_over_the_api_is_the_pages_export(client, tmp_path):
    lead = make_user("lead")
    baseline = classifier_run(tmp_path, "base", *scored((3.0, 3.0, 2.5, 2.5, 1.0, 1.0), seed=1))
    better = classifier_run(tmp_path, "fair", *scored((3.0,) * 6, seed=2), synthetic=True)
    query = {"baseline": baseline.pk, "runs": [better.pk]}
    answer = token_client(lead).get("/api/fairness/", query)
    assert answer.status_code == 200
    client.force_login(lead)
    page = client.get(reverse("training:fairness_export"), {**query, "format": "json"})
    assert answer.json() == json.loads(page.content)
    rows = answer.json()["rows"]
    assert [(r["role"], r["run_id"]) for r in rows] == [
        ("baseline", baseline.pk),
        ("candidate", better.pk),
    ]
    missing = token_client(lead).get("/api/fairness/", {"baseline": 10**9, "runs": [10**9]})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no finished baseline classifier"}


def test_a_run_artifact_over_the_api_is_the_run_pages_file(client, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"steps": 4}')
    (folder / "loss.csv").write_text("step,loss\n1,0.5\n")
    run = RunFactory(artifacts_dir=str(folder), job=JobFactory(state=JobState.SUCCEEDED))
    engineer = make_user("engineer")
    api = token_client(engineer)
    listed = api.get(f"/api/runs/{run.pk}/").json()["artifacts"]
    assert set(listed) == {"manifest.json", "loss.csv"}
    client.force_login(engineer)
    for name in listed:
        over_api = api.get(f"/api/runs/{run.pk}/artifact/", {"name": name})
        page = client.get(reverse("training:artifact", kwargs={"run_id": run.pk, "name": name}))
        assert over_api.status_code == page.status_code == 200
        assert b"".join(over_api.streaming_content) == b"".join(page.streaming_content)
        assert over_api["Content-Type"] == page["Content-Type"]
    refused = api.get(f"/api/runs/{run.pk}/artifact/", {"name": "../../etc/passwd"})
    assert refused.status_code == 404 and refused.json() == {"detail": "no such artifact"}
    assert api.get(f"/api/runs/{run.pk}/artifact/").json() == {
        "detail": "name one of the run's artifacts (?name=)"
    }


def test_jobs_are_polled_and_controlled_with_the_jobs_pages_rights():
    job = JobFactory(state=JobState.RUNNING, progress_done=3, progress_total=8)
    engineer_api, lead_api = token_client(make_user("engineer")), token_client(make_user("lead"))
    polled = lead_api.get(f"/api/jobs/{job.pk}/").json()
    assert (polled["state"], polled["progress_done"], polled["terminal"]) == ("running", 3, False)
    assert lead_api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 403
    cancelled = engineer_api.post(f"/api/jobs/{job.pk}/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    job.refresh_from_db()
    assert job.cancel_requested or job.state == JobState.CANCELLED
    assert cancelled.json()["job"]["id"] == job.pk
