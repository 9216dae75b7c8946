"""Data-parallel training (issue 19) on 2 CPU processes with gloo, against one process.

One joint run (new token rows and LoRA, gradient accumulation, the diversity loss over the
whole global batch, VAE posterior draws) trained three ways: in this process; and on two
ranks that are cancelled, then lose a rank to SIGKILL, then resume to the end. The two-rank
loss curve must be the one-process curve to 1e-5 (relative), the learned tokens and LoRA the
same, the vocabulary untouched, and no rank may outlive its launcher's call.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from fairskin.diffusion.artifacts import EMBEDDINGS_DIR, LORA_FILE
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.checkpoints import latest_checkpoint
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.launch import PARALLEL_DIR, NotEnoughDevices, RanksFailed, train_on_ranks
from fairskin.diffusion.parallel import Ranks, sample_generator
from fairskin.diffusion.training import train
from fairskin.progress import JobCancelled, SilentProgress
from tests.fairskin.diffusion.drawn import drawn_items

pytestmark = pytest.mark.slow  # three launches of two ranks: about 40 s on 2 cores

CELLS = [("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5), ("DF", 3), ("DF", 4)]
FAST = {"validation_every": 10_000, "validation_inference_steps": 1, "lr_warmup_steps": 0}
STEPS = 16


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _rank_pids(run_dir) -> list[int]:
    return [int(p.read_text()) for p in (run_dir / PARALLEL_DIR).glob("rank-*.pid")]


def _losses(run_dir) -> dict[int, float]:
    with (run_dir / "loss.csv").open() as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh)}


class _CancelAt(SilentProgress):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def update(self, done: int, total: int, message: str = "") -> None:
        super().update(done, total, message)
        if message.startswith("step") and done >= self.step:
            raise JobCancelled("cancelled by the test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    tiny = resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))
    items = drawn_items(tmp_path_factory.mktemp("images"), CELLS)
    ti = train(
        config=TrainConfig.build("textual_inversion", {"steps": 2, **FAST}),
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("ti"),
        progress=SilentProgress(),
    )
    lora = train(
        config=TrainConfig.build("lora", {"steps": 2, **FAST}),
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("lora"),
        parents=[ti.run_dir],
        progress=SilentProgress(),
    )
    settings = {
        "steps": STEPS,
        "batch_size": 4,
        "grad_accumulation": 2,
        "checkpoint_every": 2,
        "lora_dropout": 0.0,  # its masks come from each rank's own generator (see docs)
        "learning_rate": 1e-3,
        **FAST,
    }
    return tiny, items, [ti.run_dir, lora.run_dir], settings


def test_two_ranks_train_the_one_process_run_through_a_cancel_a_dead_rank_and_a_resume(
    setup, tmp_path
):
    tiny, items, parents, settings = setup
    one = train(
        config=TrainConfig.build("joint", settings),
        base=tiny,
        items=items,
        run_dir=tmp_path / "one",
        parents=parents,
        progress=SilentProgress(),
    )
    config = TrainConfig.build("joint", {**settings, "processes": 2})
    run_dir = tmp_path / "two"
    launch = {"config": config, "base": tiny, "items": items, "run_dir": run_dir}

    # 1. Cancelled: rank 0 saves a checkpoint at the step both ranks finished; none survives.
    with pytest.raises(JobCancelled):
        train_on_ranks(**launch, parents=parents, progress=_CancelAt(2), poll_seconds=0.02)
    cancelled_at = latest_checkpoint(run_dir)
    assert cancelled_at is not None
    first = int(cancelled_at.name.split("-")[1])
    assert 2 <= first < STEPS
    assert not any(_alive(pid) for pid in _rank_pids(run_dir))

    # 2. Rank 1 killed once a later checkpoint exists: every rank ends, the error says so.
    killed: list[int] = []

    def kill_rank_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            newest = latest_checkpoint(run_dir)
            pid_file = run_dir / PARALLEL_DIR / "rank-1.pid"
            if newest is not None and newest != cancelled_at and pid_file.is_file():
                pid = int(pid_file.read_text())
                os.kill(pid, 9)
                killed.append(pid)
                return
            time.sleep(0.01)

    (run_dir / PARALLEL_DIR / "rank-1.pid").unlink()
    killer = threading.Thread(target=kill_rank_one)
    killer.start()
    with pytest.raises(RanksFailed, match="exit code"):
        train_on_ranks(**launch, parents=parents, progress=SilentProgress())
    killer.join()
    assert killed, "rank 1 was never seen"
    assert not any(_alive(pid) for pid in _rank_pids(run_dir))
    second = latest_checkpoint(run_dir)
    assert second is not None and first < int(second.name.split("-")[1]) < STEPS

    # 3. Resumed on two ranks to the end.
    result = train_on_ranks(**launch, parents=parents, progress=SilentProgress())
    assert result.resumed_from == int(second.name.split("-")[1])
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert len(attempts) == 3

    # The loss curve is the one-process curve, step by step.
    expected = dict(one.loss_history)
    got = _losses(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, value in got.items():
        assert value == pytest.approx(expected[step], rel=1e-5), step
    # What the run learned: the same tokens and LoRA, in the same files.
    names = [LORA_FILE] + [
        f"{EMBEDDINGS_DIR}/{p.name}" for p in (one.run_dir / EMBEDDINGS_DIR).glob("*.safetensors")
    ]
    assert len(names) > 1
    for name in names:
        a, b = load_file(str(one.run_dir / name)), load_file(str(run_dir / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["vocabulary_unchanged"] is True
    assert manifest["config"]["processes"] == 2
    assert not any(_alive(pid) for pid in _rank_pids(run_dir))


def test_the_draws_of_a_sample_depend_on_its_position_not_its_rank():
    # Position 5 of step 3, micro-batch 1: the same numbers whoever draws them.
    a = torch.randn(4, generator=sample_generator(7, 3, 1, 5))
    b = torch.randn(4, generator=sample_generator(7, 3, 1, 5))
    c = torch.randn(4, generator=sample_generator(7, 3, 1, 6))
    d = torch.randn(4, generator=sample_generator(7, 4, 1, 5))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    # The ranks' shares of a global batch of 8 tile it exactly.
    shares = [Ranks(r, 4).positions(8) for r in range(4)]
    assert sorted(p for share in shares for p in share) == list(range(8))
    with pytest.raises(ValueError, match="does not split"):
        Ranks(0, 3).positions(8)


def test_the_number_of_processes_is_not_part_of_what_a_checkpoint_must_match():
    from fairskin.diffusion.checkpoints import run_identity

    def settings_hash(processes: int) -> str:
        config = TrainConfig.build("lora", {"processes": processes, "batch_size": 8})
        return run_identity(
            identity="r", config=config.to_dict(), base_model="tiny", selection_hash="s", parents=[]
        )["settings_hash"]

    assert settings_hash(1) == settings_hash(2) == settings_hash(8)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"processes": 3, "batch_size": 4}, "batch_size 4 does not split over 3 processes"),
        ({"processes": 9, "batch_size": 9}, "processes must be a whole number from 1 to 8"),
        ({"processes": 0}, "processes must be a whole number from 1 to 8"),
        ({"processes": True}, "processes"),
    ],
)
def test_impossible_process_counts_are_refused_with_the_reason(settings, message):
    from fairskin.diffusion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainConfig.build("lora", settings)


def test_more_processes_than_the_machine_shows_are_refused_before_anything_starts(setup, tmp_path):
    tiny, items, parents, settings = setup
    many = (os.cpu_count() or 1) + 1
    if many > 8:
        pytest.skip("this machine shows 8 or more cores")
    config = TrainConfig.build("joint", {**settings, "processes": many, "batch_size": 4 * many})
    with pytest.raises(NotEnoughDevices, match=f"asks for {many} processes"):
        train_on_ranks(
            config=config,
            base=tiny,
            items=items,
            run_dir=tmp_path / "run",
            parents=parents,
            progress=SilentProgress(),
        )
    assert not (tmp_path / "run").exists()


LAUNCHER = """
import json, sys
from pathlib import Path
from fairskin.diffusion.base_models import BaseModel
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.launch import train_on_ranks
from fairskin.diffusion.training import TrainItem
from fairskin.progress import SilentProgress

a = json.loads(sys.argv[1])
config = a["config"]
train_on_ranks(
    config=TrainConfig.build(config.pop("kind"), config),
    base=BaseModel(**a["base"]),
    items=[TrainItem(*i) for i in a["items"]],
    run_dir=Path(a["run_dir"]),
    parents=[Path(p) for p in a["parents"]],
    progress=SilentProgress(),
    stale_after=3.0,
)
"""


def test_a_stalled_launcher_s_ranks_end_on_their_own(setup, tmp_path):
    # The worker holding the job is stopped (SIGSTOP): its ranks must not train on beside the
    # ranks of whichever worker takes the job over once the lease runs out.
    import dataclasses
    import subprocess
    import sys

    tiny, items, parents, settings = setup
    config = TrainConfig.build("joint", {**settings, "processes": 2, "steps": 100_000})
    run_dir = tmp_path / "run"
    args = {
        "config": config.to_dict(),
        "base": dataclasses.asdict(tiny),
        "items": [[i.path, i.diagnosis, i.fst] for i in items],
        "run_dir": str(run_dir),
        "parents": [str(p) for p in parents],
    }
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(args)])
    try:
        deadline = time.monotonic() + 120
        while len(_rank_pids(run_dir)) < 2 or not (run_dir / "loss.csv").is_file():
            assert time.monotonic() < deadline, "the ranks never started training"
            time.sleep(0.1)
        ranks = _rank_pids(run_dir)
        launcher.send_signal(19)  # SIGSTOP
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in ranks):
            assert time.monotonic() < deadline, "the ranks outlived their stalled launcher"
            time.sleep(0.2)
        assert "the launcher stalled" in (run_dir / PARALLEL_DIR / "ranks.log").read_text()
    finally:
        launcher.kill()
        launcher.wait(timeout=10)
