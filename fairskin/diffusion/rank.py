"""One rank of a data-parallel training run, started by torchrun (`launch.train_on_ranks`).

    python -m torch.distributed.run --standalone --nproc-per-node N -m fairskin.diffusion.rank SPEC

Reads the run from SPEC (`launch.write_spec`), joins the process group (NCCL on CUDA, one
device per rank; gloo on the CPU), trains its share (`training.train` with `parallel.Ranks`)
and leaves. Rank 0 reports through `launch.FileProgress` and writes ``result.json``. Every rank
watches the launcher's pid and ends when the launcher is gone, so no rank outlives its job.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

LAUNCHER_GONE_EXIT = 70
LAUNCHER_STALLED_EXIT = 71
GROUP_TIMEOUT = timedelta(hours=2)  # rank 0 may render a validation grid while others wait


def _watch_launcher(pid: int, heartbeat: Path, stale_after: float) -> None:
    """End this rank when the launcher is gone, or stalled (its heartbeat file older than
    ``stale_after`` seconds); torchrun then ends the others."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(LAUNCHER_GONE_EXIT)
            except PermissionError:  # alive, another user's: not ours to judge
                pass
            try:
                age = time.time() - heartbeat.stat().st_mtime
            except OSError:
                continue
            if age > stale_after:
                sys.stderr.write(f"the launcher stalled ({age:.0f} s without a heartbeat)\n")
                os._exit(LAUNCHER_STALLED_EXIT)

    threading.Thread(target=watch, daemon=True, name="launcher-watch").start()


def main(argv: list[str]) -> int:
    import torch
    import torch.distributed as dist

    from fairskin.diffusion.base_models import BaseModel
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.launch import CANCELLED_EXIT, HEARTBEAT_FILE, FileProgress
    from fairskin.diffusion.parallel import Ranks
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.progress import JobCancelled, Progress, SilentProgress

    spec = json.loads(Path(argv[1]).read_text())
    folder = Path(argv[1]).parent
    _watch_launcher(
        int(spec["launcher_pid"]), folder / HEARTBEAT_FILE, float(spec["launcher_stale_after"])
    )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and spec["device"] in (None, "cuda")
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    (folder / f"rank-{rank}.pid").write_text(str(os.getpid()))
    config = dict(spec["config"])
    progress: Progress = FileProgress(folder) if rank == 0 else SilentProgress()
    try:
        result = train(
            config=TrainConfig.build(config.pop("kind"), config),
            base=BaseModel(**spec["base"]),
            items=[TrainItem(path=p, diagnosis=d, fst=f) for p, d, f in spec["items"]],
            run_dir=Path(spec["run_dir"]),
            progress=progress,
            parents=[Path(p) for p in spec["parents"]],
            run_info=spec["run_info"],
            identity=spec["identity"],
            device=f"cuda:{local}" if cuda else "cpu",
            ranks=Ranks(rank, world),
        )
    except JobCancelled:
        return CANCELLED_EXIT  # rank 0 saved a checkpoint; torchrun ends the others
    if rank == 0:
        (folder / "result.json").write_text(
            json.dumps(
                {
                    "steps": result.steps,
                    "final_loss": result.final_loss,
                    "tokens": result.tokens,
                    "resumed_from": result.resumed_from,
                    "history": result.loss_history,
                }
            )
        )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
