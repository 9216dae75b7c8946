"""The engineers' and leads' operations over the API with a personal token: the same services,
rights and refusals as the pages; bad input answers a specific 400 and changes nothing."""

from __future__ import annotations

import io

import pytest
from rest_framework.test import APIClient

from accounts.tokens import token_create
from catalog.models import Dataset
from jobs.models import Job, JobState
from review.models import Study
from tests.factories import BatchFactory, ImageFactory, RunFactory, SampleFactory, make_user
from tests.review.conftest import batch, open_study, raters  # noqa: F401  (fixtures)
from training.models import Run

pytestmark = pytest.mark.django_db


def api_as(role: str) -> tuple[APIClient, object]:
    user = make_user(role)
    _, text = token_create(user=user, name=f"{role} script", expires_in_days=7)
    client = APIClient(enforce_csrf_checks=True)  # a token needs no CSRF token
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client, user


def upload(text: str, name: str = "meta.csv"):
    f = io.BytesIO(text.encode())
    f.name = name
    return f


def test_dataset_import_queues_a_job_and_bad_metadata_is_refused():
    api, engineer = api_as("engineer")
    bad = api.post(
        "/api/datasets/",
        {"format": "csv", "name": "derm", "metadata": upload("file,diagnosis,fst\na.png,MEL,7\n")},
        format="multipart",
    )
    assert bad.status_code == 400 and "row 1" in str(bad.json())
    assert not Job.objects.exists()
    answer = api.post(
        "/api/datasets/",
        {"format": "csv", "name": "derm", "metadata": upload("file,diagnosis\na.png,MEL\n")},
        format="multipart",
    )
    assert answer.status_code == 202, answer.content
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.kind == "catalog.import" and job.launched_by == engineer
    assert job.params["name"] == "derm"
    polled = api.get(f"/api/jobs/{job.pk}/").json()
    assert polled["state"] == "queued" and polled["terminal"] is False


def test_a_lead_reads_datasets_but_cannot_import_preprocess_or_split():
    lead_api, _ = api_as("lead")
    dataset = ImageFactory(split="train").dataset
    assert lead_api.get("/api/datasets/").json()[0]["name"] == dataset.name
    detail = lead_api.get(f"/api/datasets/{dataset.name}/").json()
    assert detail["summary"]["images"] == 1 and detail["splits"] == {"train": 1}
    for path in ("/api/datasets/", f"/api/datasets/{dataset.name}/preprocess/"):
        assert lead_api.post(path, {}, format="json").status_code == 403
    assert lead_api.post(f"/api/datasets/{dataset.name}/split/", {}).status_code == 403


def test_split_and_preprocess_with_the_pages_rules():
    api, _ = api_as("engineer")
    dataset = Dataset.objects.get(pk=ImageFactory().dataset_id)
    for _ in range(9):
        ImageFactory(dataset=dataset)
    bad = api.post(f"/api/datasets/{dataset.name}/split/", {"train": 0.9}, format="json")
    assert bad.status_code == 400 and "1" in str(bad.json())
    dataset.refresh_from_db()
    assert dataset.split_seed is None
    done = api.post(f"/api/datasets/{dataset.name}/split/", {"seed": 3}, format="json")
    assert done.status_code == 200 and sum(done.json()["counts"].values()) == 10
    job = api.post(f"/api/datasets/{dataset.name}/preprocess/", {"force": True}, format="json")
    assert job.status_code == 202 and job.json()["kind"] == "catalog.preprocess"
    assert api.post("/api/datasets/nope/preprocess/", {}, format="json").status_code == 404


def test_run_launch_validates_settings_and_changes_nothing_when_refused():
    api, engineer = api_as("engineer")
    dataset = ImageFactory(split="train", preprocessed="preprocessed/a.png").dataset
    refusals = [
        ({"kind": "lora", "datasets": [dataset.name]}, "parent"),
        ({"kind": "textual_inversion", "datasets": ["missing"]}, "missing"),
        ({"kind": "textual_inversion", "datasets": [dataset.name], "config": {"rank": 4}}, "rank"),
        (
            {"kind": "textual_inversion", "datasets": [dataset.name], "config": {"steps": -1}},
            "steps",
        ),
        ({"kind": "nonsense", "datasets": [dataset.name]}, "kind"),
    ]
    for body, word in refusals:
        answer = api.post("/api/runs/", body, format="json")
        assert answer.status_code == 400, (body, answer.content)
        assert word in str(answer.json()), (body, answer.json())
    assert not Run.objects.exists()
    launched = api.post(
        "/api/runs/",
        {
            "kind": "textual_inversion",
            "datasets": [dataset.name],
            "config": {"steps": 2, "validation_inference_steps": 2},
        },
        format="json",
    )
    assert launched.status_code == 201, launched.content
    run = Run.objects.get(pk=launched.json()["id"])
    assert run.created_by == engineer and run.config["steps"] == 2
    assert launched.json()["job"]["state"] == "queued"
    lead_api, _ = api_as("lead")
    assert lead_api.post("/api/runs/", {"kind": "lora"}, format="json").status_code == 403
    assert lead_api.post(f"/api/runs/{run.pk}/cancel/").status_code == 403
    cancelled = api.post(f"/api/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == JobState.CANCELLED
    assert api.post(f"/api/runs/{run.pk}/cancel/").status_code == 409


def test_batch_launch_progress_samples_export_and_refusals():
    api, _ = api_as("engineer")
    unusable = RunFactory(kind="textual_inversion")
    answer = api.post("/api/batches/", {"model_run": unusable.pk, "target": 4}, format="json")
    assert answer.status_code == 400 and "LoRA" in answer.json()["detail"]
    missing = api.post("/api/batches/", {"model_run": 10**9, "target": 4}, format="json")
    assert missing.json() == {"model_run": ["there is no such run"]}
    finished = BatchFactory(state="finished")
    SampleFactory(batch=finished, diagnosis="MEL", fst=5, verdict="accepted", metrics={"clip": 0.3})
    detail = api.get(f"/api/batches/{finished.pk}/").json()
    assert [(s["fst"], s["quota"], s["accepted"]) for s in detail["strata"]] == [
        (5, 2, 1),
        (6, 2, 0),
    ]
    samples = api.get(f"/api/batches/{finished.pk}/samples/?verdict=accepted").json()
    assert samples["count"] == 1 and samples["results"][0]["metrics"] == {"clip": 0.3}
    csv = api.get(f"/api/batches/{finished.pk}/export/")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    as_json = api.get(f"/api/batches/{finished.pk}/export/?format=json")
    assert as_json["Content-Type"] == "application/json"
    refused = api.post(f"/api/batches/{finished.pk}/cancel/")
    assert refused.status_code == 400 and "only a running batch" in refused.json()["detail"]


def test_study_close_approve_reject_need_a_lead_and_a_confirmation(batch, raters):  # noqa: F811
    lead_api, _ = api_as("lead")
    engineer_api, _ = api_as("engineer")
    study = open_study(batch, raters)
    assert (
        engineer_api.post(f"/api/studies/{study.pk}/close/", {"confirm": True}).status_code == 403
    )
    unconfirmed = lead_api.post(f"/api/studies/{study.pk}/close/", {"confirm": False})
    assert unconfirmed.status_code == 400 and "final" in str(unconfirmed.json())
    study.refresh_from_db()
    assert study.state == "open"
    closed = lead_api.post(f"/api/studies/{study.pk}/close/", {"confirm": True}, format="json")
    assert closed.status_code == 200 and "passed" in closed.json()["gate"]
    gate = lead_api.get(f"/api/studies/{study.pk}/gate/").json()
    assert gate["gate"]["passed"] is False  # nobody rated
    approve = lead_api.post(f"/api/studies/{study.pk}/approve/", {"confirm": True}, format="json")
    assert approve.status_code == 400 and "gate" in approve.json()["detail"]
    no_reason = lead_api.post(f"/api/studies/{study.pk}/reject/", {"confirm": True}, format="json")
    assert no_reason.status_code == 400
    rejected = lead_api.post(
        f"/api/studies/{study.pk}/reject/", {"confirm": True, "reason": "blurry"}, format="json"
    )
    assert rejected.status_code == 200 and rejected.json()["reason"] == "blurry"


def test_study_create_with_the_study_forms_rules(batch, raters):  # noqa: F811
    lead_api, _ = api_as("lead")
    body = {"batch": batch.pk, "raters": [r.username for r in raters[:2]], "sample_size": 4}
    too_few = lead_api.post("/api/studies/", body, format="json")
    assert too_few.status_code == 400 and "three" in str(too_few.json()).lower()
    unknown = lead_api.post("/api/studies/", {**body, "raters": ["ghost"]}, format="json")
    assert unknown.json() == {"raters": ["no such user: ghost"]}
    assert not Study.objects.exists()
    created = lead_api.post(
        "/api/studies/", {**body, "raters": [r.username for r in raters]}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["state"] == "preparing" and created.json()["job"]
