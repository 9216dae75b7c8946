"""The Python client (client/) against a live server: typed exceptions carrying the server's
message, and the README's example script run end to end with a real Celery worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from fairskin_client import (
    AuthenticationError,
    FairSkin,
    NotFound,
    PermissionDenied,
    ValidationError,
)

from accounts.models import ApiTokenUse
from accounts.tokens import token_create, token_revoke
from generation.models import Batch, Sample
from tests.factories import make_user
from training.models import Run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "client" / "examples" / "import_train_generate.py"


def test_refusals_surface_as_typed_exceptions_with_the_servers_message(live_server):
    engineer, lead = make_user("engineer"), make_user("lead")
    token, text = token_create(user=engineer, name="client test", expires_in_days=7)
    fs = FairSkin(live_server.url, text)
    assert fs.datasets.list() == []
    with pytest.raises(ValidationError) as invalid:
        fs.runs.create(kind="textual_inversion", datasets=["nowhere"])
    assert "nowhere" in str(invalid.value) and invalid.value.status == 400
    assert "datasets" in invalid.value.detail
    with pytest.raises(NotFound):
        fs.runs.get(10**9)
    _, lead_text = token_create(user=lead, name="lead client", expires_in_days=7)
    with pytest.raises(PermissionDenied):
        FairSkin(live_server.url, lead_text).runs.create(kind="lora", datasets=["x"])
    token_revoke(user=engineer, token_id=token.pk)
    with pytest.raises(AuthenticationError, match="the API token 'client test' was revoked"):
        fs.datasets.list()
    with pytest.raises(AuthenticationError, match="invalid API token"):
        FairSkin(live_server.url, text[:-3] + "abc").datasets.list()
    assert not Run.objects.exists()
    fs.close()


def test_the_readme_names_the_example_script_it_shows():
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```python\n(.*?)```", readme[readme.index("## The API") :], re.S)
    assert shown is not None and shown.group(1) == EXAMPLE.read_text()


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_example_imports_trains_and_generates(live_server, start_worker, tmp_path):
    start_worker(queues="gpu,cpu")
    engineer = make_user("engineer")
    _, text = token_create(user=engineer, name="readme example", expires_in_days=7)
    call_command("seed_demo", "--export", str(tmp_path), "--per-class", "6", "--seed", "4")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            str(tmp_path / "demo.csv"),
            str(tmp_path / "demo-images.zip"),
        ],
        env={**os.environ, "FAIRSKIN_URL": live_server.url, "FAIRSKIN_TOKEN": text},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    batch = Batch.objects.get()
    accepted = Sample.objects.filter(batch=batch, verdict="accepted").count()
    assert batch.state == "finished" and accepted == 8
    assert f"batch {batch.pk}: 8 images accepted" in result.stdout
    ti, lora = Run.objects.order_by("pk")
    assert (ti.kind, lora.kind, lora.parent_id) == ("textual_inversion", "lora", ti.pk)
    assert ti.created_by == engineer and ti.job.state == "succeeded"
    # wait() showed progress lines on stderr as the jobs went.
    assert re.search(rf"run {ti.pk}: running", result.stderr), result.stderr
    assert re.search(rf"batch {batch.pk}: finished: 8/8 accepted", result.stderr)
    # Every request was logged with the token's name.
    assert ApiTokenUse.objects.filter(token_name="readme example").count() > 10
