"""What engineers and leads see of a batch: live progress per stratum, the gallery and its
filters, the metrics with their calibration labels, exports, cancel/resume and the launch form."""

import csv
import io
import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from generation.models import Batch, BatchState, Sample, Verdict
from generation.services import batch_create
from jobs.models import Job, JobState
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished(capsys, lora_run) -> Batch:
    call_command(
        "generate",
        "--model",
        str(lora_run.pk),
        "--count",
        "4",
        "--diagnosis",
        "MEL",
        "--fst-distribution",
        "5=0.5,6=0.5",
        "--steps",
        "2",
        "--wait",
        "--overgeneration",
        "2",
        "--set",
        "brightness_low=0.2",
    )
    batch = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    # One crafted rejection so the gallery filter has something to separate.
    sample = Sample.objects.filter(batch=batch, verdict=Verdict.ACCEPTED).last()
    Sample.objects.filter(pk=sample.pk).update(
        verdict=Verdict.REJECTED, reasons=["brightness 0.010 outside [0.2, 0.9]"]
    )
    return batch


def test_batch_page_shows_strata_gallery_metrics_and_labels(client, finished):
    client.force_login(make_user("lead"))
    page = client.get(reverse("generation:batch", args=[finished.pk])).content.decode()
    assert "Progress per stratum" in page and "quota met" in page
    assert "random weights: uncalibrated" in page
    assert "not FID/KID" in page  # a random-weight FID is never presented as an FID
    assert "not measurable" in page
    # Two demo images per class leave too few held-out real images for a calibrated threshold,
    # even pooled over every skin type: the page says which checks reject nothing.
    assert 'data-testid="calibration-too-few"' in page and "reject nothing" in page
    total = Sample.objects.filter(batch=finished).count()
    assert f"{total} sample" in page

    rejected = client.get(
        reverse("generation:batch", args=[finished.pk]), {"verdict": "rejected"}
    ).content.decode()
    assert "1 sample<" in rejected and "brightness 0.010 outside" in rejected
    fst6 = client.get(reverse("generation:batch", args=[finished.pk]), {"fst": "6"})
    assert (
        fst6.context["page"].paginator.count == Sample.objects.filter(batch=finished, fst=6).count()
    )

    sample = Sample.objects.filter(batch=finished).first()
    detail = client.get(reverse("generation:sample", args=[sample.pk])).content.decode()
    assert sample.prompt.replace("<", "&lt;").replace(">", "&gt;") in detail
    assert str(sample.seed) in detail
    image = client.get(reverse("generation:image", args=[sample.pk]))
    assert image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content)[:4] == b"\x89PNG"


def test_exports_carry_every_sample_and_the_calibration_labels(client, finished):
    client.force_login(make_user("engineer"))
    response = client.get(reverse("generation:export", args=[finished.pk]))
    text = response.content.decode()
    first, body = text.split("\n", 1)
    assert first.startswith("# batch") and "inception" in first and "uncalibrated" in first
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == Sample.objects.filter(batch=finished).count()
    assert {r["verdict"] for r in rows} >= {"accepted", "rejected"}
    data = json.loads(
        client.get(reverse("generation:export", args=[finished.pk]), {"format": "json"}).content
    )
    assert "inception" in data["uncalibrated"] and data["report"]["criteria"]
    assert len(data["samples"]) == len(rows)


def test_cancel_stops_every_job_and_resume_picks_the_batch_up(client, lora_run):
    batch = batch_create(model_run=lora_run, target=4, diagnoses=["MEL"], steps=2)
    client.force_login(make_user("engineer"))
    client.post(reverse("generation:cancel", args=[batch.pk]))
    batch.refresh_from_db()
    assert batch.state == BatchState.CANCELLED
    assert Job.objects.get(pk=batch.job_id).state == JobState.CANCELLED
    again = client.post(reverse("generation:cancel", args=[batch.pk]), follow=True)
    assert "only a running batch can be cancelled" in again.content.decode()
    client.post(reverse("generation:resume", args=[batch.pk]))
    batch.refresh_from_db()
    assert batch.state == BatchState.PREPARING
    assert Job.objects.get(pk=batch.job_id).state == JobState.QUEUED


def test_admin_launch_form_prefills_defaults_and_refuses_bad_input(client, lora_run):
    client.force_login(make_user("engineer", username="eng-admin"))
    url = reverse("admin:generation_batch_launch")
    form = client.get(url).content.decode()
    assert "blurry, low quality, text, watermark, duplicated" in form
    assert 'value="0.25"' in form and 'value="1.5"' in form  # FST V share, cap
    base = {
        "model_run": lora_run.pk,
        "target": 8,
        "diagnoses": ["MEL"],
        "overgeneration": 1.5,
        "scheduler": "dpm-solver++",
        "steps": 3,
        "guidance": 7.5,
        "negative_prompt": "blurry",
        "seed": 3,
        "shard_size": 64,
        "device_batch": 8,
        "scoring": "{}",
        "filter_percentile": 90,
        **{f"fst_{f}": s for f, s in {1: 0.1, 2: 0.1, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}.items()},
    }
    bad = client.post(url, {**base, "fst_6": 0.9}).content.decode()
    assert "must add up to 1" in bad and not Batch.objects.exists()
    response = client.post(url, base)
    batch = Batch.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "generation:batch", args=[batch.pk]
    )
    assert batch.scheduler == "dpm-solver++" and batch.quotas["MEL:5"] == 2 and batch.seed == 3
    assert batch.filter_percentile == 90 and batch.scoring["fid"]["percentile"] == 90


def test_dermatologists_see_no_generation_link(client, finished):
    client.force_login(make_user("dermatologist"))
    assert "Generation" not in client.get(reverse("accounts:home")).content.decode()
    client.force_login(make_user("lead"))
    assert reverse("generation:batches") in client.get(reverse("accounts:home")).content.decode()
