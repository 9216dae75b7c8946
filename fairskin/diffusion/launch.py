"""Train one run on N data-parallel processes: start the ranks, follow them, stop them.

A Celery prefork child cannot start multiprocessing children, so the ranks run as a subprocess:
``python -m torch.distributed.run --standalone`` (torchrun, in torch) with N processes of
`fairskin.diffusion.rank`. ``--standalone`` gives the group a free port of its own on
127.0.0.1, so two runs on one machine never collide; ``--max-restarts 0`` makes torchrun end
every rank when one dies. The calling process (the job's worker, or a command's ``--wait``)
keeps the job's lease and heartbeat, forwards rank 0's progress to its own `Progress`, and:

- on cancel, asks rank 0 to stop (a ``cancel`` file that rank 0's progress reads at its next
  report); rank 0 saves a checkpoint at the step every rank finished and exits, torchrun ends
  the rest; after a grace period the whole process group is killed;
- on a dead rank (torchrun exits non-zero), raises `RanksFailed` with the end of the ranks' log;
- if it dies itself, the ranks notice (each watches the launcher's pid) and end; if it stalls
  (stopped, swapped out: its heartbeat file, touched every second by a thread of its own so a
  database outage does not count, grows older than ``stale_after`` seconds) they end too, so
  a stalled worker's ranks never train beside the ranks of the worker that took its job over
  (the job runner passes half the job's lease).

Everything a rank needs is in ``<run>/parallel/spec.json``; the ranks' output goes to
``<run>/parallel/ranks.log``, rank 0's progress to ``events.jsonl`` and its result to
``result.json``. A resume starts every rank again from the run's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairskin.diffusion.base_models import BaseModel
from fairskin.diffusion.config import TrainConfig
from fairskin.progress import JobCancelled, Progress

PARALLEL_DIR = "parallel"
CANCELLED_EXIT = 3  # a rank's exit code after a requested stop
STOP_GRACE_SECONDS = 120.0  # for rank 0 to save its checkpoint after a cancel
LOG_TAIL_LINES = 12
HEARTBEAT_FILE = "launcher.alive"


class RanksFailed(RuntimeError):
    """The ranks ended without finishing the run (a rank died or raised)."""


class NotEnoughDevices(RuntimeError):
    """The run asks for more processes than this machine has devices."""


def check_devices(processes: int) -> None:
    """Refuse ``processes`` ranks on a machine that cannot hold them (`parallel`)."""
    import torch

    from fairskin.diffusion.parallel import visible_devices

    shown = visible_devices()
    if processes > shown:
        what = "CUDA devices" if torch.cuda.is_available() else "CPU cores (gloo ranks)"
        raise NotEnoughDevices(
            f"the run asks for {processes} processes but this machine shows {shown} {what}; "
            f"start it on a worker with at least {processes} (README: multi-GPU workers)"
        )


def write_spec(
    folder: Path,
    *,
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[Any],
    run_dir: Path,
    parents: Sequence[Path],
    run_info: dict[str, Any] | None,
    identity: dict[str, Any] | None,
    device: str | None,
    stale_after: float = 60.0,
) -> Path:
    spec = {
        "config": config.to_dict(),
        "base": dataclasses.asdict(base),
        "items": [[i.path, i.diagnosis, i.fst] for i in items],
        "run_dir": str(run_dir),
        "parents": [str(p) for p in parents],
        "run_info": run_info or {},
        "identity": identity,
        "device": device,
        "launcher_pid": os.getpid(),
        "launcher_stale_after": stale_after,
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, default=str))
    return path


def train_on_ranks(
    *,
    config: TrainConfig,
    base: BaseModel,
    items: Sequence[Any],
    run_dir: Path,
    progress: Progress,
    parents: Sequence[Path] = (),
    run_info: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    device: str | None = None,
    poll_seconds: float = 0.2,
    stale_after: float = 60.0,
) -> Any:
    """`training.train` on ``config.processes`` ranks; returns rank 0's `TrainResult`."""
    from fairskin.diffusion.training import TrainResult

    check_devices(config.processes)
    folder = run_dir / PARALLEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("events.jsonl", "result.json", "cancel", "ranks.log"):
        (folder / stale).unlink(missing_ok=True)
    for stale_pid in folder.glob("rank-*.pid"):  # the last attempt's ranks
        stale_pid.unlink()
    spec = write_spec(
        folder,
        config=config,
        base=base,
        items=items,
        run_dir=run_dir,
        parents=parents,
        run_info=run_info,
        identity=identity,
        device=device,
        stale_after=stale_after,
    )
    heartbeat = _Heartbeat(folder / HEARTBEAT_FILE)
    heartbeat.start()
    proc = _start(spec, config.processes, folder)
    events = _Events(folder / "events.jsonl", progress)
    try:
        while proc.poll() is None:
            events.forward()
            time.sleep(poll_seconds)
        events.forward()
    except JobCancelled:
        (folder / "cancel").touch()
        _stop(proc)
        events.forward_logs()  # rank 0's last words: the step its checkpoint was saved at
        raise
    finally:
        heartbeat.stop.set()
        if proc.poll() is None:  # the launcher is unwinding for another reason: end the ranks
            _kill_group(proc)
    if proc.returncode != 0:
        raise RanksFailed(
            f"the {config.processes} training processes ended with exit code "
            f"{proc.returncode}; the last lines of {folder / 'ranks.log'}:\n"
            + _log_tail(folder / "ranks.log")
        )
    result = json.loads((folder / "result.json").read_text())
    return TrainResult(
        run_dir,
        result["steps"],
        result["final_loss"],
        result["tokens"],
        result["resumed_from"],
        [tuple(pair) for pair in result["history"]],
    )


def _start(spec: Path, processes: int, folder: Path) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    if "OMP_NUM_THREADS" not in env:  # each rank its share of the cores (torchrun would say 1)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={processes}",
        "--max-restarts=0",
        "-m",
        "fairskin.diffusion.rank",
        str(spec),
    ]
    with (folder / "ranks.log").open("wb") as log:
        # A session of its own: the whole group (torchrun and its ranks) is stopped together.
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """After a cancel: rank 0 saves its checkpoint and exits; then the group is ended."""
    try:
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group (torchrun ends its ranks), then SIGKILL whatever is left in it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is empty
        try:
            proc.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            pass


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


class _Heartbeat(threading.Thread):
    """Touches the launcher's heartbeat file every second while the launcher lives."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True, name="ranks-heartbeat")
        self.path = path
        self.stop = threading.Event()
        path.touch()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.path.touch()


class _Events:
    """Rank 0's progress, one JSON object per line, passed on to the launcher's Progress."""

    CHECK_SECONDS = 2.0  # how often to ask whether the job was cancelled while nothing moves

    def __init__(self, path: Path, progress: Progress) -> None:
        self.path, self.progress, self.offset = path, progress, 0
        self.checked = time.monotonic()

    def _quiet(self) -> None:
        if time.monotonic() - self.checked >= self.CHECK_SECONDS:
            self.checked = time.monotonic()
            self.progress.check_cancelled()

    def _new_lines(self) -> list[bytes]:
        """The complete lines written since the last read (a line still being written waits)."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.splitlines()

    def forward_logs(self) -> None:
        """Only the log lines left (after a cancel, when progress may no longer be reported)."""
        for line in self._new_lines():
            event = json.loads(line)
            if event["event"] == "log":
                self.progress.log(event["message"])

    def forward(self) -> None:
        lines = self._new_lines()
        for line in lines:
            event = json.loads(line)
            kind = event.pop("event")
            if kind == "phase":
                self.progress.phase(**event)
            elif kind == "update":
                self.progress.update(**event)
            else:
                self.progress.log(event["message"])
        if not lines:
            self._quiet()


class FileProgress:
    """Rank 0's `Progress`: events to ``events.jsonl`` for the launcher, and a stop when the
    launcher leaves a ``cancel`` file."""

    def __init__(self, folder: Path) -> None:
        self.events = folder / "events.jsonl"
        self.cancel = folder / "cancel"

    def _write(self, **event: Any) -> None:
        with self.events.open("a") as fh:
            fh.write(json.dumps(event) + "\n")

    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        self._write(event="phase", name=name, total=total, done=done)
        self.check_cancelled()

    def update(self, done: int, total: int, message: str = "") -> None:
        self._write(event="update", done=done, total=total, message=message)
        self.check_cancelled()

    def log(self, message: str) -> None:
        self._write(event="log", message=message)

    def check_cancelled(self) -> None:
        if self.cancel.exists():
            raise JobCancelled("the launcher asked the ranks to stop")
