"""Timing and counting helpers for the benchmarks: device synchronisation, the machine's busy
CPU time, the median round, FLOPs counted by torch, and the GPU's dense bf16 matrix rate."""

from __future__ import annotations

import os
from pathlib import Path


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (Linux; 0 elsewhere), to tell whether other
    processes shared the cores during a CPU run."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median_round(rounds: list[dict]) -> dict:
    """The round whose total time is the median, so its phases stay consistent."""
    return sorted(rounds, key=lambda seconds: sum(seconds.values()))[len(rounds) // 2]


def count_flops(work) -> int:
    """FLOPs of matmuls, convolutions and attention that `work()` runs (torch's FlopCounter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # The CPU attention kernel is missing from torch's FLOP formulas; it does the same work.
    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        work()
    return counter.get_total_flops()


def bf16_matmul_tflops(device) -> float:
    """Dense bf16 matrix rate of the GPU: the median of a few large square matmuls."""
    import statistics

    import torch

    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1000 / 10)
    return 2 * n**3 / statistics.median(times) / 1e12


def flops_per_image(generator, scorer, job, args) -> tuple[int, int, int]:
    """Counted FLOPs of one image: whole `generate` call at args.steps, its UNet per step, and
    scoring it.

    `generate` is counted at batch 1 with 1 and 2 steps; the difference is one step's UNet
    forward (classifier-free guidance runs it on 2 latents), the rest is text encoding and the
    VAE decode. Scoring's numpy parts (the FID distance, the CLIP index) are not counted.
    """

    def generate(steps: int):
        return generator.generate(
            [job[2]], [job[3]], steps=steps, guidance=args.guidance, size=args.size
        )

    one_step, two_steps = count_flops(lambda: generate(1)), count_flops(lambda: generate(2))
    per_step = two_steps - one_step
    image = generate(1)
    scoring = count_flops(lambda: scorer.score(image, diagnoses=[job[0]], fsts=[job[1]]))
    return one_step + (args.steps - 1) * per_step, per_step, scoring


def step_stopwatch(after_step=None):
    """A training progress that stamps the time of every finished step; ``after_step()``, if
    given, runs after each stamp (it may raise to stop the run)."""
    import time

    from fairskin.progress import SilentProgress

    class Stopwatch(SilentProgress):
        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def update(self, done: int, total: int, message: str = "") -> None:
            self.stamps.append(time.perf_counter())
            if after_step is not None:
                after_step()

    return Stopwatch()


def median_step_seconds(stamps: list[float]) -> float | None:
    """Median interval between consecutive steps, leaving out the first step (warm-up) and the
    last (it includes the validation grid and artifacts); None with too few steps."""
    import statistics

    intervals = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    return statistics.median(intervals) if intervals else None
