"""A run's page shows the phase its job is in, that phase's own count, and an estimate of the
time left only while the job runs: never on a cancelled, failed or finished run."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, JobState
from tests.factories import RunFactory, make_user

pytestmark = pytest.mark.django_db
GRID = "Rendering the validation grid (step 500)"


@pytest.fixture
def rendering_grid():
    """A run 60 s into rendering its validation grid, 4 of 18 images done: 3m30s left."""
    return RunFactory(
        job__state=JobState.RUNNING,
        job__progress_phase=GRID,
        job__progress_done=4,
        job__progress_total=18,
        job__phase_start_done=0,
        job__phase_started_at=timezone.now() - timedelta(seconds=60),
    )


def live(client, run) -> str:
    client.force_login(make_user("lead"))
    return client.get(reverse("training:live", args=[run.pk])).content.decode()


def test_a_running_phase_shows_its_name_count_and_time_left(client, rendering_grid):
    page = live(client, rendering_grid)
    assert f'data-testid="job-phase">{GRID}<' in page
    assert "4 / 18" in page
    assert re.search(r"about 3m3[0-2]s left", page)  # 60 s for 4 images, 14 to go
    full = client.get(reverse("training:run", args=[rendering_grid.pk])).content.decode()
    assert GRID in full and 'data-testid="job-eta"' in full
    listing = client.get(reverse("training:runs")).content.decode()
    assert f"{GRID}: 4/18" in listing


@pytest.mark.parametrize("state", [JobState.CANCELLED, JobState.FAILED])
def test_a_stopped_run_shows_where_it_stopped_and_no_time_left(client, rendering_grid, state):
    Job.objects.filter(pk=rendering_grid.job_id).update(state=state, error="stopped")
    page = live(client, rendering_grid)
    assert GRID in page and "4 / 18" in page  # where it stopped
    assert 'data-testid="job-eta"' not in page and " left<" not in page and "ETA" not in page
    listing = client.get(reverse("training:runs")).content.decode()
    assert GRID not in listing and "4/18" in listing


def test_a_finished_run_shows_its_steps_and_loss_not_its_last_phase(client, rendering_grid):
    Job.objects.filter(pk=rendering_grid.job_id).update(
        state=JobState.SUCCEEDED,
        progress_phase="Saving artifacts",
        progress_done=8,
        progress_total=8,
    )
    rendering_grid.config = {"steps": 8}
    rendering_grid.final_loss = 0.12345
    rendering_grid.save()
    page = live(client, rendering_grid)
    assert "Finished: 8 / 8 steps · final loss 0.1235" in page
    assert "Saving artifacts" not in page and 'data-testid="job-eta"' not in page
