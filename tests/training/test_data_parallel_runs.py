"""Training runs on several processes (issue 19) as an engineer launches them: placement
refused at launch unless a worker showed the devices, the train command's --wait on this
machine's 2 gloo ranks, the worker hosts in the admin. A real Celery worker training on two
processes, cancelled and resumed: tests/training/test_training_worker.py."""

import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from jobs.hosts import register_worker, worker_queues
from jobs.models import Job, JobLogEntry, JobState, WorkerHost
from training.models import Run
from training.services import RunConfigError, run_create

FAST = {
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
}
CORES = os.cpu_count() or 1


def seed(capsys):
    call_command("seed_demo", "--per-class", "2", "--seed", "2")
    capsys.readouterr()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _ranks_alive(run: Run) -> list[int]:
    folder = Path(run.folder, "parallel")
    return [pid for p in folder.glob("rank-*.pid") if _alive(pid := int(p.read_text()))]


@pytest.mark.django_db
def test_a_run_on_several_processes_is_refused_at_launch_until_a_worker_shows_the_devices(
    capsys,
):
    seed(capsys)
    launch = {"kind": "textual_inversion", "selection": {"datasets": ["demo"]}}
    jobs = Job.objects.count()
    with pytest.raises(RunConfigError, match="no GPU worker has started yet"):
        run_create(**launch, config={"processes": 2, **FAST})
    assert not Run.objects.exists() and Job.objects.count() == jobs

    # A worker that takes only the gpu queue does not serve a 2-process run.
    register_worker(name="gpu0@small", queues=["gpu", "cpu"])
    with pytest.raises(RunConfigError, match=r"no worker has taken the gpu-x2 queue"):
        run_create(**launch, config={"processes": 2, **FAST})
    assert not Run.objects.exists()

    register_worker(name="gpu1@big", queues=worker_queues(CORES))
    host = WorkerHost.objects.get(name="gpu1@big")
    assert host.devices == CORES and host.device_kind == "cpu"
    if CORES < 8:  # more than any worker showed: refused, naming the biggest
        n = CORES + 1
        with pytest.raises(RunConfigError, match=rf"the most any worker showed is {CORES}"):
            run_create(**launch, config={"processes": n, "batch_size": 4 * n, **FAST})
    run = run_create(**launch, config={"processes": 2, **FAST})
    assert run.job.queue == "gpu-x2"
    assert run.config["processes"] == 2
    # One process stays on the plain gpu queue.
    assert run_create(**launch, config=FAST).job.queue == "gpu"


@pytest.mark.django_db
def test_the_train_command_refuses_impossible_process_counts_before_queuing(capsys):
    seed(capsys)
    base = ["train", "--kind", "lora", "--dataset", "demo", "--wait"]
    with pytest.raises(CommandError, match="batch_size 4 does not split over 3 processes"):
        call_command(*base, "--processes", "3")
    if CORES < 8:
        n = CORES + 1
        with pytest.raises(CommandError, match=f"asks for {n} processes but this machine shows"):
            call_command(*base, "--processes", str(n), "--set", f"batch_size={4 * n}")
    with pytest.raises(CommandError, match="classifier runs train on one process"):
        call_command("train", "--kind", "classifier", "--dataset", "demo", "--processes", "2")
    assert not Run.objects.exists()


def test_worker_queues_prints_the_queues_for_the_devices(capsys):
    call_command("worker_queues", "--devices", "4")
    assert capsys.readouterr().out.strip() == "gpu,gpu-x2,gpu-x3,gpu-x4"
    call_command("worker_queues", "--devices", "1")
    assert capsys.readouterr().out.strip() == "gpu"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.django_db
def test_the_train_command_trains_on_two_processes_here_with_wait(capsys, client):
    if CORES < 2:
        pytest.skip("needs 2 cores")
    seed(capsys)
    call_command(
        "train", "--kind", "textual_inversion", "--dataset", "demo", "--steps", "4",
        "--processes", "2", "--wait",
        *[f"--set={k}={v}" for k, v in FAST.items()],
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    run = Run.objects.get(pk=int(lines[-2]))
    assert lines[-1] == str(run.folder)
    assert run.job.state == JobState.SUCCEEDED and run.tokens
    manifest = json.loads(Path(run.folder, "manifest.json").read_text())
    assert manifest["config"]["processes"] == 2 and manifest["vocabulary_unchanged"] is True
    assert "on 2 processes" in " ".join(
        JobLogEntry.objects.filter(job=run.job).values_list("message", flat=True)
    )
    assert not _ranks_alive(run)
    # The run page says where it trained.
    from tests.factories import make_user

    client.force_login(make_user("engineer"))
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "2 data-parallel processes" in page


@pytest.mark.django_db
def test_engineers_see_the_worker_hosts_in_the_admin(client):
    from tests.factories import make_user

    register_worker(name="gpus@rack1", queues=worker_queues(2))
    client.force_login(make_user("engineer"))
    page = client.get("/admin/jobs/workerhost/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "gpus@rack1" in text and "gpu, gpu-x2" in text
    client.force_login(make_user("dermatologist"))
    assert client.get("/admin/jobs/workerhost/").status_code in (302, 403)
