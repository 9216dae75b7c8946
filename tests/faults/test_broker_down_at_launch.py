"""Fault: Redis (the Celery broker) is down when someone launches work.

A private redis-server is started on a free port and the app is pointed at it: the `train`
command as a separate process (its own settings from the environment), and the in-process
Celery app for the admin and page forms. With that Redis stopped, every launch path must say
clearly that the task broker is unreachable, exit non-zero (the command), and leave nothing
half-created: no run, job, log line, batch, dataset or study. Once Redis is back, the same
launch succeeds and its message really is in that Redis' queue.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from catalog.models import Dataset
from generation.models import Batch
from jobs.models import Job, JobLogEntry, JobState
from review.models import Study, StudyRater
from tests.conftest import ROOT
from tests.factories import BatchFactory, RunFactory, SampleFactory, make_user
from tests.faults.processes import PrivateRedis
from training.models import Run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = (Run, Job, JobLogEntry, Batch, Dataset, Study, StudyRater)


def rows() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def added(before: dict[str, int]) -> dict[str, int]:
    return {name: n - before[name] for name, n in rows().items() if n != before[name]}


def queued(broker: PrivateRedis) -> list[tuple[str, str, int]]:
    """(queue, task, job id) of every message waiting in the private Redis."""
    client = broker.client()
    found = []
    for queue in ("gpu", "cpu"):
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append((queue, message["headers"]["task"], kwargs["job_id"]))
    return found


def refusal(broker: PrivateRedis) -> str:
    return f"The task broker ({broker.url}) is unreachable"


@pytest.fixture
def demo(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "2")
    capsys.readouterr()
    return Dataset.objects.get(name="demo")


def train_command(broker: PrivateRedis) -> subprocess.CompletedProcess:
    """`manage.py train` (no --wait) in its own process, on the test database and the
    private broker: what an engineer types."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fairskin_site.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": broker.url,
    }
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "train",
            "--kind",
            "textual_inversion",
            "--dataset",
            "demo",
            "--steps",
            "5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_train_command_refuses_while_redis_is_down_then_queues(
    transactional_db, django_db_serialized_rollback, broker, demo
):
    if connection.vendor != "postgresql":
        pytest.skip("the command runs in its own process: needs the PostgreSQL test database")
    broker.stop()
    before = rows()
    started = time.monotonic()
    refused = train_command(broker)
    refused_s = time.monotonic() - started
    assert refused.returncode != 0, refused.stdout
    assert refusal(broker) in refused.stderr, refused.stderr
    assert "Nothing was queued" in refused.stderr and "--wait" in refused.stderr
    assert "Traceback" not in refused.stderr and ".." not in refused.stderr
    assert added(before) == {}

    broker.start()
    accepted = train_command(broker)
    assert accepted.returncode == 0, accepted.stderr
    run = Run.objects.get()
    job = Job.objects.get(kind="training.run")
    assert f"queued as job {job.pk} on the gpu queue" in accepted.stdout
    assert job.state == JobState.QUEUED and job.kind == "training.run" and job.celery_task_id
    assert run.job_id == job.pk and str(run.pk) in accepted.stdout.splitlines()
    assert queued(broker) == [("gpu", "jobs.run", job.pk)]
    print(
        f"\ntrain refused in {refused_s:.1f}s (exit {refused.returncode}): "
        f"{refused.stderr.strip().splitlines()[-1]}"
    )


def post_refused_then_accepted(client, url, form, broker, capture):
    """Post a launch form with the broker down (the form again, with the reason, and nothing
    created or queued), then again once it is back; the second answer is returned."""
    broker.stop()
    before = rows()
    with capture(execute=True) as callbacks:
        response = client.post(url, form)
    assert response.status_code == 200  # the form again, with the reason
    assert refusal(broker) in response.content.decode()
    assert callbacks == [] and added(before) == {}
    broker.start()
    with capture(execute=True):
        return client.post(url, form)


def test_admin_training_launch_refuses_while_redis_is_down(
    db, client, app_on_private_broker, demo, django_capture_on_commit_callbacks
):
    broker = app_on_private_broker
    client.force_login(make_user("engineer"))
    url = reverse("admin:training_run_launch")
    form = {
        "kind": "textual_inversion",
        "datasets": ["demo"],
        "split": "train",
        "config": '{"steps": 5}',
    }
    response = post_refused_then_accepted(
        client, url, form, broker, django_capture_on_commit_callbacks
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("training:run", args=[run.pk])
    assert run.job.state == JobState.QUEUED and Job.objects.get(pk=run.job_id).celery_task_id
    assert queued(broker) == [("gpu", "jobs.run", run.job_id)]


def test_generation_batch_launch_refuses_while_redis_is_down(
    db, client, app_on_private_broker, tmp_path, django_capture_on_commit_callbacks
):
    broker = app_on_private_broker
    folders = [tmp_path / "ti", tmp_path / "lora"]
    for folder in folders:
        folder.mkdir()
    ti = RunFactory(kind="textual_inversion", artifacts_dir=str(folders[0]), job__state="succeeded")
    lora = RunFactory(kind="lora", parent=ti, artifacts_dir=str(folders[1]), job__state="succeeded")
    client.force_login(make_user("engineer"))
    url = reverse("admin:generation_batch_launch")
    form = {
        "model_run": lora.pk,
        "target": 8,
        "diagnoses": ["MEL"],
        "overgeneration": 1.5,
        "scheduler": "ddim",
        "steps": 3,
        "guidance": 7.5,
        "negative_prompt": "blurry",
        "size": 32,
        "seed": 3,
        "shard_size": 64,
        "device_batch": 8,
        "scoring": "{}",
        **{f"fst_{f}": s for f, s in {1: 0.1, 2: 0.1, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}.items()},
    }
    # Refused: no batch, no synthetic dataset, no job.
    response = post_refused_then_accepted(
        client, url, form, broker, django_capture_on_commit_callbacks
    )
    batch = Batch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:batch", args=[batch.pk])
    assert batch.job.state == JobState.QUEUED
    assert queued(broker) == [("gpu", "jobs.run", batch.job_id)]


def test_study_creation_refuses_while_redis_is_down(
    db, client, app_on_private_broker, django_capture_on_commit_callbacks
):
    broker = app_on_private_broker
    batch = BatchFactory(state="finished")
    for fst in (5, 5, 6, 6):
        SampleFactory(batch=batch, fst=fst, verdict="accepted")
    raters = [make_user("dermatologist") for _ in range(3)]
    client.force_login(make_user("lead"))
    url = reverse("review:study_new")
    form = {
        "batch": batch.pk,
        "name": "during an outage",
        "raters": [r.pk for r in raters],
        "sample_size": 4,
        "control_ratio": 0,
        "seed": 1,
        "warmup_count": 0,
        "retest_share": 0,
        "mean_min": 5.0,
        "median_share_min": 0.9,
        "low_share_max": 0.1,
        "instructions": "",
    }
    # Refused: no study, no rater seats, no job.
    response = post_refused_then_accepted(
        client, url, form, broker, django_capture_on_commit_callbacks
    )
    study = Study.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("review:study", args=[study.pk])
    assert study.raters.count() == 3 and study.job.state == JobState.QUEUED
    assert queued(broker) == [("cpu", "jobs.run", study.job_id)]
