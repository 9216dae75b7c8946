"""Generation and training at the GPU's limit, eager vs optimized, in one bounded run (issue 21).

Usage: python bench/gpu.py --out DIR [--budget-s 300] [--smoke] [--wheels DIR] [--device D]
On a GPU host (docs/benchmarks.md, "GPU runbook"): `sd15-random` at 512 px, 50 steps.
With --smoke: the `tiny` model at 32 px, 4 steps, on the CPU: the same code, in the test suite.

Django-free (the engine and torch/diffusers only), and it installs nothing. With --wheels DIR
(what `make gpu-wheels` wrote) it puts DIR/site, the folder the runbook's pip command installs
those wheels into, first on sys.path; if a package is still missing it prints that command.

Rows, in this order, each written to DIR/gpu.json and DIR/gpu.md as soon as it is measured, so a
run stopped by its budget or killed keeps what it had:
- the matrix rate: a timed large matmul (bf16 on a GPU, fp32 on a CPU), TFLOP/s;
- generation images/s per device batch (one call of that many images, after a warm-up call at
  that shape), eager vs optimized (`BatchGenerator(optimized=True)`), without and with scoring
  (`Scorer.score`) and PNG encoding (`encode_for_storage`), run one after the other as
  generation/work.py does; the share of the wall time spent generating; on the eager rows the
  counted FLOPs per image, and every row's share of the matrix rate;
- LoRA and textual-inversion seconds per optimizer step and per micro-step, and peak device
  memory (CUDA only), eager (the defaults) vs optimized (cached latents; bf16 autocast on CUDA);
- classifier training images/s (forward, backward, Adam step on a fixed batch, so the data
  loader is not part of it), eager vs optimized (channels-last; bf16 autocast on CUDA).
Rows the budget has no time left for are written as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairskin.generation.optimize import COMPILE_MODES

NEEDED = ("diffusers", "open_clip", "lpips", "ftfy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu.json and gpu.md")
    parser.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget")
    parser.add_argument("--smoke", action="store_true", help="tiny model, CPU, a few steps")
    parser.add_argument("--wheels", type=Path, default=None, help="what make gpu-wheels wrote")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="where the base model is built, kept for the next run (default: a temporary folder)",
    )  # fmt: skip
    parser.add_argument(
        "--compile-mode", default="default", choices=COMPILE_MODES,
        help="torch.compile mode of the optimized UNet on CUDA (reduce-overhead: CUDA graphs)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=1, help="generation rounds per row; the median is shown"
    )
    args = parser.parse_args(argv)
    if args.budget_s <= 0 or args.repeats < 1:
        parser.error("--budget-s must be positive and --repeats at least 1")
    if args.wheels is not None and not args.wheels.is_dir():
        parser.error(f"--wheels {args.wheels}: no such folder (run make gpu-wheels)")
    return args


def use_wheels(folder: Path | None) -> None:
    """Put ``folder/site`` first on sys.path; exit with the install command if still missing.

    The wheels themselves are not importable as zip files: open_clip reads its tokenizer
    vocabulary and lpips its weights as files next to their modules."""
    if folder is not None and (folder / "site").is_dir():
        sys.path.insert(0, str((folder / "site").resolve()))
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    wheels = folder or Path("wheels-gpu")
    sys.exit(
        f"missing: {', '.join(missing)}. Install the wheels of `make gpu-wheels` with\n"
        f"  {Path(sys.executable).name} -m pip install --no-index --no-deps --require-hashes "
        f"--find-links {wheels} -r {wheels}/requirements.txt --target {wheels}/site\n"
        f"then run again with --wheels {wheels}"
    )


class Report:
    """Rows written to out/gpu.json and out/gpu.md after every row."""

    COLUMNS = ("section", "variant", "batch", "images_per_s", "s_per_step", "peak_mem_bytes")

    def __init__(self, out: Path, meta: dict) -> None:
        self.out, self.meta = out, meta
        self.rows: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, **row) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        data = json.dumps({"meta": self.meta, "rows": self.rows}, indent=1, default=str)
        tmp = self.out / "gpu.json.tmp"
        tmp.write_text(data)
        tmp.replace(self.out / "gpu.json")
        (self.out / "gpu.md").write_text(self.markdown())

    def markdown(self) -> str:
        meta = "; ".join(f"{k} {v}" for k, v in self.meta.items())
        lines = [f"{meta}\n", "| " + " | ".join(self.COLUMNS) + " | other |"]
        lines.append("|" + "---|" * (len(self.COLUMNS) + 1))
        for row in self.rows:
            cells = [_cell(row.get(c)) for c in self.COLUMNS]
            rest = ", ".join(f"{k} {_cell(v)}" for k, v in row.items() if k not in self.COLUMNS)
            lines.append("| " + " | ".join(cells) + f" | {rest} |")
        return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()


class BudgetSpent(Exception):
    """Raised from a training run's progress report once the budget is spent."""


def matmul_tflops(device) -> tuple[float, str]:
    import torch

    from bench.measure import bf16_matmul_tflops

    if device.type == "cuda":
        return bf16_matmul_tflops(device), "bfloat16"
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e12, "float32"


def settings(args: argparse.Namespace) -> dict:
    if args.smoke:
        return {"model": "tiny", "steps": 4, "batches": (1, 2), "compiled_batches": (1, 2),
                "train_steps": 4, "classifier": ("resnet50", 64, 8)}  # fmt: skip
    return {"model": "sd15-random", "steps": 50, "batches": (1, 2, 4, 8, 16, 32),
            "compiled_batches": (8, 32), "train_steps": 12,
            "classifier": ("resnet50", 224, 64)}  # fmt: skip


def timed_round(generator, scorer, jobs, *, steps: int, size: int, out: Path) -> dict:
    """One call of `generate` for ``jobs``, then scoring and PNG writes, as generation/work.py
    runs them; seconds of each phase."""
    import numpy as np
    import torch

    from bench.generation import png_bytes
    from bench.measure import synchronize

    prompts, seeds = [j[2] for j in jobs], [j[3] for j in jobs]
    started = time.perf_counter()
    images = generator.generate(prompts, seeds, steps=steps, size=size)
    synchronize(generator.device)
    generated = time.perf_counter()
    scorer.score(images, diagnoses=[j[0] for j in jobs], fsts=[j[1] for j in jobs])
    synchronize(generator.device)
    scored = time.perf_counter()
    levels = images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    for job, pixels in zip(jobs, levels.cpu().numpy(), strict=True):
        (out / f"{job[3]}.png").write_bytes(png_bytes(np.ascontiguousarray(pixels)))
    written = time.perf_counter()
    return {"generate": generated - started, "score": scored - generated, "png": written - scored}


def generation_rows(report, budget, *, args, conf, base, run_dirs, work, rate) -> None:
    """Both variants loaded side by side; per device batch, rounds alternate eager and optimized
    (a slow spell hits both) and each row shows its median round. The optimized variant (its
    UNet compiled on CUDA) runs at two batch sizes only, each compile costing a warm-up."""
    import torch

    from bench.generation import STRATA, build_scorer
    from bench.measure import flops_per_image, median_round, synchronize
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.generation.sampler import BatchGenerator

    generators = {
        variant: BatchGenerator(
            base, run_dirs, device=args.device, optimized=optimized, compile_mode=args.compile_mode
        )
        for variant, optimized in (("eager", False), ("optimized", True))
    }
    args.size = generators["eager"].native_size
    scorer = build_scorer(args, args.size, work / "scoring")
    tokens = generators["eager"].tokens
    per_image = None
    seconds_per_image = 0.0  # the latest round's, with scoring and writes: the budget's guess
    for batch in conf["batches"]:
        variants = ["eager"] + (["optimized"] if batch in conf["compiled_batches"] else [])
        jobs = [
            (dx, fst, prompt_for(dx, fst, available=tokens), 1000 + i)
            for i, (dx, fst) in enumerate((STRATA * 8)[:batch])
        ]
        need = seconds_per_image * batch * len(variants) * args.repeats * 1.2
        if budget.left() < 5 or need > budget.left():
            for variant in variants:
                report.add(section="generation", variant=variant, batch=batch, skipped="budget")
            continue
        warm_up = {}
        for variant in variants:  # kernel choice, caches and compiles are not what is measured
            warm_started = time.perf_counter()
            generators[variant].generate([j[2] for j in jobs], [j[3] for j in jobs], steps=2,
                                         size=args.size)  # fmt: skip
            synchronize(generators[variant].device)
            warm_up[variant] = time.perf_counter() - warm_started
        rounds: dict[str, list[dict]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:
                folder = work / "images" / f"{variant}-{batch}"
                folder.mkdir(parents=True, exist_ok=True)
                rounds[variant].append(timed_round(generators[variant], scorer, jobs,
                                                   steps=conf["steps"], size=args.size,
                                                   out=folder))  # fmt: skip
        if per_image is None:  # counted once, on the eager path (the same work)
            per_image = flops_per_image(
                generators["eager"], scorer, jobs[0],
                argparse.Namespace(steps=conf["steps"], guidance=7.5, size=args.size),
            )[0]  # fmt: skip
        for variant in variants:
            seconds = median_round(rounds[variant])
            total = sum(seconds.values())
            seconds_per_image = total / batch
            report.add(
                section="generation",
                variant=variant,
                batch=batch,
                images_per_s=batch / seconds["generate"],
                images_per_s_with_scoring_and_png=batch / total,
                generate_share_of_wall=seconds["generate"] / total,
                score_s=seconds["score"],
                png_s=seconds["png"],
                rounds=args.repeats,
                warm_up_s=warm_up[variant],
                flops_per_image=per_image,
                share_of_matmul_rate=per_image * batch / seconds["generate"] / 1e12 / rate,
                steps=conf["steps"],
                size=args.size,
                dtype=str(generators[variant].pipe.unet.dtype).removeprefix("torch."),
                optimizations=generators[variant].optimizations,
            )
    generators.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def training_rows(report, budget, *, args, conf, base, ti_run, work) -> None:
    import torch

    from bench.generation import STRATA
    from bench.measure import median_step_seconds, step_stopwatch
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.imaging.demo import draw_lesion

    def check_budget() -> None:
        if budget.left() < 0:
            raise BudgetSpent

    device = torch.device(args.device)
    items = []
    for i in range(16):
        dx, fst = STRATA[i % len(STRATA)]
        path = work / f"train-{i}.png"
        draw_lesion(dx, fst, seed=i, size=max(64, args.size or 64)).save(path)
        items.append(TrainItem(str(path), dx, fst))
    optimized: dict[str, object] = {"cache_latents": True}
    if device.type == "cuda":
        optimized["mixed_precision"] = "bf16"
    # A LoRA trains on top of the setup's textual-inversion run, as in production.
    parents = {"textual_inversion": [], "lora": [ti_run]}
    for kind in ("textual_inversion", "lora"):
        for variant, overrides in (("eager", {}), ("optimized", optimized)):
            if budget.left() < 15:
                report.add(section=kind, variant=variant, skipped="budget")
                continue
            config = TrainConfig.build(
                kind,
                {"steps": conf["train_steps"], "validation_every": 10_000,
                 "checkpoint_every": 10_000, "lr_warmup_steps": 0, **overrides},
            )  # fmt: skip
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            watch = step_stopwatch(check_budget)
            run_dir = work / f"{kind}-{variant}"
            stopped = None
            try:
                train(config=config, base=base, items=items, run_dir=run_dir, progress=watch,
                      parents=parents[kind], device=args.device)  # fmt: skip
            except BudgetSpent:
                stopped = f"budget spent after {len(watch.stamps)} steps"
                watch.stamps.extend(watch.stamps[-1:])  # the last full step counts
            per_step = median_step_seconds(watch.stamps)
            report.add(
                section=kind,
                variant=variant,
                batch=config.batch_size,
                s_per_step=per_step,
                s_per_micro_step=per_step / config.grad_accumulation if per_step else None,
                peak_mem_bytes=(
                    torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
                ),
                lora_rank=config.lora_rank if kind == "lora" else None,
                resolution=config.resolution or args.size,
                settings=overrides,
                stopped=stopped,
            )


def classifier_rows(report, budget, *, args, conf) -> None:
    import torch
    import torch.nn.functional as F

    from fairskin.classifier.model import build_classifier

    arch, size, batch = conf["classifier"]
    device = torch.device(args.device)
    for variant in ("eager", "optimized"):
        if budget.left() < 10:
            report.add(section="classifier", variant=variant, skipped="budget")
            continue
        model, _ = build_classifier(arch=arch)
        model.to(device)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 7, (batch,), device=device)
        autocast = variant == "optimized" and device.type == "cuda"
        if variant == "optimized":
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        times = []
        for i in range(8):
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - started)
        report.add(section="classifier", variant=variant, batch=batch,
                   images_per_s=batch / statistics.median(times), arch=arch, size=size,
                   autocast_bf16=autocast, channels_last=variant == "optimized")  # fmt: skip


def run(args: argparse.Namespace) -> Report:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = args.device or (
        "cpu" if args.smoke else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    # ViT-B-32 (seeded random weights: nothing is downloaded) costs what production scoring
    # does; the smoke run uses the test suite's toy CLIP.
    tiny_clip = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_clip.json"
    args.clip_model = str(tiny_clip) if args.smoke else "ViT-B-32"
    args.size = None
    budget = Budget(args.budget_s)
    conf = settings(args)
    device = torch.device(args.device)
    from fairskin.diffusion.versions import library_versions

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        name = f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads} threads"
    report = Report(args.out, {"device": name, "model": conf["model"], "budget_s": args.budget_s,
                               **library_versions()})  # fmt: skip
    rate, dtype = matmul_tflops(device)
    report.add(section="matmul", variant=dtype, tflops=rate)
    from bench.generation import train_artifacts
    from fairskin.diffusion.base_models import resolve_base_model

    with tempfile.TemporaryDirectory(prefix="fairskin-bench-gpu-") as tmp:
        work = Path(tmp)
        (work / "scoring").mkdir()
        started = time.perf_counter()
        base = resolve_base_model(conf["model"], cache_dir=args.cache_dir or work / "models")
        run_dirs = train_artifacts(base, work, args.device)
        report.add(section="setup", variant="-", seconds=time.perf_counter() - started)
        generation_rows(report, budget, args=args, conf=conf, base=base, run_dirs=run_dirs,
                        work=work, rate=rate)  # fmt: skip
        training_rows(
            report, budget, args=args, conf=conf, base=base, ti_run=run_dirs[0], work=work
        )
        classifier_rows(report, budget, args=args, conf=conf)
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    use_wheels(args.wheels)
    run(args)


if __name__ == "__main__":
    main()
