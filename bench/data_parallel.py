"""What data-parallel training buys on this machine: one process against N ranks (issue 19).

The same LoRA run (same global batch, same steps) trained by ``training.train`` in this process
(with every core) and by ``launch.train_on_ranks`` on N gloo ranks (each with its share of the
cores). Each arm runs twice, at ``--short`` and ``--long`` steps, so the fixed cost (start-up,
loading, latent encoding, and for the ranks torchrun and the process group) separates from the
time per step: per step = (T(long) - T(short)) / (long - short).

    PYTHONPATH=. .venv/bin/python bench/data_parallel.py --model tiny --size 64 --batch 8

On a CPU the ranks share the same cores, so the best to hope for is no loss; the GPU figure
needs a machine with several GPUs (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--short", type=int, default=4)
    parser.add_argument("--long", type=int, default=24)
    args = parser.parse_args()

    import torch

    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.launch import train_on_ranks
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.imaging.demo import draw_lesion
    from fairskin.progress import SilentProgress

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    work = Path(tempfile.mkdtemp(prefix="fairskin-ddp-bench-"))
    base = resolve_base_model(args.model, cache_dir=work / "models")
    items = []
    for i, (dx, fst) in enumerate([(dx, f) for dx in ("MEL", "NV", "BCC") for f in range(1, 7)]):
        path = work / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=args.size).save(path)
        items.append(TrainItem(str(path), dx, fst))
    ti = train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, "validation_every": 10_000}),
        base=base,
        items=items,
        run_dir=work / "ti",
        progress=SilentProgress(),
    )

    def timed(steps: int, processes: int, name: str) -> float:
        config = TrainConfig.build(
            "lora",
            {
                "steps": steps,
                "batch_size": args.batch,
                "grad_accumulation": 1,
                "resolution": args.size,
                "validation_every": 10_000,
                "checkpoint_every": 10_000,
                "lr_warmup_steps": 0,
                "processes": processes,
            },
        )
        started = time.perf_counter()
        run = train_on_ranks if processes > 1 else train
        run(
            config=config,
            base=base,
            items=items,
            run_dir=work / name,
            parents=[ti.run_dir],
            progress=SilentProgress(),
        )
        return time.perf_counter() - started

    figures: dict[str, object] = {}
    for label, processes in (("one_process", 1), (f"{args.processes}_ranks", args.processes)):
        short = timed(args.short, processes, f"{label}-short")
        long = timed(args.long, processes, f"{label}-long")
        per_step = (long - short) / (args.long - args.short)
        figures[label] = {
            "s_per_step": round(per_step, 4),
            "fixed_s": round(short - args.short * per_step, 2),
            "total_s_long": round(long, 2),
        }
    one = figures["one_process"]["s_per_step"]  # type: ignore[index]
    ranks = figures[f"{args.processes}_ranks"]["s_per_step"]  # type: ignore[index]
    figures["speed_up_per_step"] = round(one / ranks, 3)
    figures["settings"] = {**vars(args)}
    figures["machine"] = (
        f"{platform.machine()}, {cores} cores, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU (gloo)'}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
