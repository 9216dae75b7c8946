"""A batch's live panel shows the phase and count of the job working for it: the preparation
job while it prepares, the running shard jobs while it generates; time left only while a job
runs."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from generation.models import BatchState
from jobs.models import Job, JobState
from tests.factories import BatchFactory, JobFactory, make_user

pytestmark = pytest.mark.django_db
INCEPTION = "Inception features of real images"


def live(client, batch) -> str:
    client.force_login(make_user("lead"))
    return client.get(reverse("generation:live", args=[batch.pk])).content.decode()


def test_a_preparing_batch_shows_its_preparation_phase_and_count(client):
    batch = BatchFactory(
        state=BatchState.PREPARING,
        job__state=JobState.RUNNING,
        job__progress_phase=INCEPTION,
        job__progress_done=238,
        job__progress_total=500,
        job__phase_start_done=0,
        job__phase_started_at=timezone.now() - timedelta(seconds=119),
    )
    page = live(client, batch)
    panel = page[page.index('data-testid="batch-preparation"') :]
    assert f'data-testid="job-phase">{INCEPTION}<' in panel
    assert "238 / 500" in panel and "width: 48%" in panel  # not the 0 % of nothing accepted
    assert 'data-testid="job-eta"' in panel
    Job.objects.filter(pk=batch.job_id).update(state=JobState.CANCELLED)
    page = live(client, batch)
    assert INCEPTION in page and 'data-testid="job-eta"' not in page


def test_a_generating_batch_lists_its_running_shards_with_their_progress(client):
    batch = BatchFactory(state=BatchState.GENERATING)
    started = timezone.now() - timedelta(seconds=30)
    running = [
        JobFactory(
            kind="generation.shard",
            parent=batch.job,
            title=f"Shard {n}",
            state=JobState.RUNNING,
            progress_phase="Generating candidates",
            progress_done=n,
            progress_total=64,
            phase_started_at=started,
        )
        for n in (5, 9, 13)
    ]
    JobFactory(kind="generation.shard", parent=batch.job, title="Shard waiting")
    JobFactory(
        kind="generation.shard",
        parent=batch.job,
        title="Shard done",
        state=JobState.SUCCEEDED,
        progress_done=64,
        progress_total=64,
    )
    page = live(client, batch)
    assert "3 running" in page and "1 queued" in page and "1 succeeded" in page
    listed = page[page.index('data-testid="batch-running-jobs"') :]
    listed = listed[: listed.index("</ul>")]
    for job in running:
        assert f"{job.title} {job.pk}</a>" in listed and f"{job.progress_done} / 64" in listed
    assert "Shard waiting" not in listed and "Shard done" not in listed
    assert listed.count('data-testid="job-eta"') == 3
    assert 'data-testid="batch-preparation"' not in page
