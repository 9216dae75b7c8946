"""Training step time on the tiny model (CPU here; any device torch finds).

Usage: .venv/bin/python bench/train_step.py [--steps 12] [--threads 2]
Per-step time is the median interval between consecutive progress reports, leaving out the
first step (warm-up) and the last (it includes the validation grid and artifacts).
Compares VAE-encoding every batch with cached latents, the obvious alternative, in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import median_step_seconds, step_stopwatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training import TrainItem, library_versions, train
    from fairskin.imaging.demo import draw_lesion
    from fairskin.progress import SilentProgress

    work = Path(tempfile.mkdtemp(prefix="fairskin-bench-"))
    base = resolve_base_model("tiny", cache_dir=work / "models")
    items = []
    for i in range(24):
        path = work / f"{i}.png"
        draw_lesion(["MEL", "NV", "BCC", "DF"][i % 4], 1 + i % 6, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), ["MEL", "NV", "BCC", "DF"][i % 4], 1 + i % 6))
    ti_dir = work / "ti-parent"
    train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, "validation_every": 99}),
        base=base,
        items=items,
        run_dir=ti_dir,
        progress=SilentProgress(),
    )

    def seconds_per_step(kind: str, **overrides) -> float:
        config = TrainConfig.build(
            kind,
            {
                "steps": args.steps,
                "validation_every": 10_000,
                "checkpoint_every": 10_000,
                **overrides,
            },
        )
        watch = step_stopwatch()
        train(
            config=config,
            base=base,
            items=items,
            run_dir=Path(tempfile.mkdtemp(dir=work)),
            progress=watch,
            parents=[ti_dir] if kind != "textual_inversion" else [],
        )
        per_step = median_step_seconds(watch.stamps)
        assert per_step is not None, "--steps must be at least 3"
        return per_step

    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; "
        + ", ".join(f"{k} {v}" for k, v in library_versions().items())
    )
    print(
        "Model: tiny (SD v1.5 architecture at toy width), 32 px, batch 4, grad accumulation 2 "
        "(one step = 8 images)\n"
    )
    print("| run | latents | s/step | ratio |")
    print("|---|---|---|---|")
    for kind in ("textual_inversion", "lora"):
        per_step = {
            cached: seconds_per_step(kind, cache_latents=cached) for cached in (False, True)
        }
        for cached, value in per_step.items():
            label = "cached" if cached else "VAE-encoded every batch"
            print(f"| {kind} | {label} | {value:.3f} | {per_step[False] / value:.2f}x |")


if __name__ == "__main__":
    main()
