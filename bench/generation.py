"""Generation throughput: the batch generator with scoring vs a plain diffusers loop.

Usage: .venv/bin/python bench/generation.py [--model tiny|sd15-random] [--images 16]
       [--steps 10] [--batch-sizes 1,4,8] [--repeats 3] [--device cpu] [--threads 2]
On a GPU: .venv/bin/python bench/generation.py --model sd15-random (512 px, 50 steps,
batches 1-32, 32 images; figures go to docs/benchmarks.md).

In one run, on the same prompts and seeds:
A  FairSkin's path: `BatchGenerator` loaded once, `.generate` in device batches of B, scoring
   on the device tensors (`Scorer.score`), then uint8 once per batch and the stored PNG and
   thumbnail (`fairskin.imaging.encode.encode_for_storage`, as `generation/work.py` does).
   Generation, scoring and encoding are timed apart.
B  the obvious alternative: a `StableDiffusionPipeline` from the same folder with the same
   textual-inversion tokens, LoRA and scheduler, called once per image with its own seeded
   generator, PIL output saved as PNG with Pillow's defaults; no scoring.
A and B must give the same pixels for a seed; the largest difference is reported.

The tokens and LoRA come from a two-step training run made here: speed does not depend on
what they learned. The scoring networks have random weights for the same reason, and a random
ResNet50 stands in for the confidence classifier so that scoring pays for it as in production.
On cuda the GPU's dense bf16 matrix rate is measured too, and the share of it generation reaches.
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

from bench.measure import (
    bf16_matmul_tflops,
    busy_cpu_seconds,
    flops_per_image,
    median_round,
    synchronize,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = ROOT / "tests" / "fixtures" / "tiny_clip.json"
STRATA = [("MEL", 2), ("NV", 5), ("BCC", 3), ("DF", 6)]
BATCH_SEED = 2026
QUICK_TRAINING = {
    "steps": 2,
    "validation_every": 1000,
    "validation_inference_steps": 1,
    "grad_accumulation": 1,
    "lr_warmup_steps": 0,
    "resolution": 64,
}


def parse_args() -> argparse.Namespace:
    from fairskin.generation.options import SCHEDULERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "sd15-random"), default="tiny")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--images", type=int, default=None, help="default: 16 on cpu, 32 on gpu")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on cpu, 50 on gpu")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated; default 1,4,8 on cpu, 1,2,4,8,16,32 on gpu",
    )
    parser.add_argument("--scheduler", default="ddim", choices=sorted(SCHEDULERS))
    parser.add_argument("--size", type=int, default=None, help="default: the model's native size")
    parser.add_argument(
        "--clip-model",
        default=None,
        help="default: tests/fixtures/tiny_clip.json on cpu, ViT-B-32 otherwise",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of B and A; the median is shown (default 3 on cpu, 1 on gpu)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the base model is written (default: a temporary folder)",
    )
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = args.device.startswith("cuda")
    if args.images is None:
        args.images = 32 if on_gpu else 16
    if args.steps is None:
        args.steps = 50 if on_gpu or args.model != "tiny" else 10
    try:
        args.batch_sizes = [
            int(b)
            for b in (args.batch_sizes or ("1,2,4,8,16,32" if on_gpu else "1,4,8")).split(",")
        ]
    except ValueError:
        parser.error(
            f"--batch-sizes must be whole numbers separated by commas, got {args.batch_sizes!r}"
        )
    if args.repeats is None:
        args.repeats = 1 if on_gpu else 3
    args.clip_model = args.clip_model or ("ViT-B-32" if on_gpu else str(TINY_CLIP))
    if min([args.images, args.steps, args.repeats, *args.batch_sizes]) < 1:
        parser.error("--images, --steps, --repeats and every batch size must be at least 1")
    return args


def train_artifacts(base, work: Path, device: str) -> list[Path]:
    """A textual-inversion run and a LoRA on top of it, two steps each."""
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.imaging.demo import draw_lesion
    from fairskin.progress import SilentProgress

    items = []
    for i, (dx, fst) in enumerate(STRATA):
        path = work / f"train-{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), dx, fst))
    ti_dir, lora_dir = work / "ti", work / "lora"
    train(
        config=TrainConfig.build("textual_inversion", QUICK_TRAINING),
        base=base,
        items=items,
        run_dir=ti_dir,
        progress=SilentProgress(),
        device=device,
    )
    train(
        config=TrainConfig.build("lora", QUICK_TRAINING),
        base=base,
        items=items,
        run_dir=lora_dir,
        progress=SilentProgress(),
        parents=[ti_dir],
        device=device,
    )
    return [ti_dir, lora_dir]


def build_scorer(args: argparse.Namespace, size: int, work: Path):
    """Random-weight scoring networks and a reference of procedural images at `size`."""
    import torch

    from fairskin.classifier.model import CLASS_NAMES, build_classifier
    from fairskin.generation.extractors import Extractors
    from fairskin.generation.reference import Reference
    from fairskin.generation.scoring import Scorer
    from fairskin.generation.scoring_config import ScoringConfig
    from fairskin.imaging.demo import draw_lesion

    config = ScoringConfig.build({})
    classifier_dir = work / "classifier"
    classifier_dir.mkdir()
    model, _ = build_classifier(arch="resnet50")
    torch.save(model.state_dict(), classifier_dir / "classifier.pt")
    manifest = {"config": {"arch": "resnet50", "image_size": 224}, "classes": CLASS_NAMES}
    (classifier_dir / "manifest.json").write_text(json.dumps(manifest))
    extractors = Extractors.load(
        device=args.device, clip_model=args.clip_model, classifier_dir=classifier_dir
    )

    images = work / "reference"
    images.mkdir()
    drawn = max(size, 64)  # the demo painter's smallest size; the reference resizes to `size`
    real = []
    for dx, fst in STRATA:
        for seed in range(config.lpips_reference_images):
            path = images / f"real-{dx}-{fst}-{seed}.png"
            draw_lesion(dx, fst, seed=100 + seed, size=drawn).save(path)
            real.append((str(path), fst))
    training = []
    for seed in range(20):
        dx, fst = STRATA[seed % len(STRATA)]
        path = images / f"train-{seed}.png"
        draw_lesion(dx, fst, seed=500 + seed, size=drawn).save(path)
        training.append((f"train-{seed}", str(path)))
    reference = Reference.build(
        extractors,
        real=real,
        training=training,
        size=size,
        lpips_images=config.lpips_reference_images,
        memorization_neighbours=config.memorization_neighbours,
    )
    return Scorer(extractors, reference, config, size=size)


def png_bytes(pixels) -> bytes:
    from fairskin.imaging.encode import encode_for_storage

    return encode_for_storage(pixels).png


def run_batched(generator, scorer, jobs, batch: int, *, args, out: Path) -> tuple[dict, dict]:
    """A: generate, score and encode in device batches; seconds per phase and pixels by seed."""
    import torch

    device = generator.device
    # Warm-up at this batch shape: kernel selection and caches are not what is measured.
    warm = jobs[:batch]
    images = generator.generate(
        [j[2] for j in warm], [j[3] for j in warm], steps=2, guidance=args.guidance, size=args.size
    )
    scorer.score(images, diagnoses=[j[0] for j in warm], fsts=[j[1] for j in warm])
    synchronize(device)

    seconds = {"generate": 0.0, "score": 0.0, "encode": 0.0}
    pixels_by_seed = {}
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        started = time.perf_counter()
        images = generator.generate(
            [j[2] for j in chunk],
            [j[3] for j in chunk],
            steps=args.steps,
            guidance=args.guidance,
            size=args.size,
        )
        synchronize(device)
        scored = time.perf_counter()
        scorer.score(images, diagnoses=[j[0] for j in chunk], fsts=[j[1] for j in chunk])
        synchronize(device)
        encoding = time.perf_counter()
        pixels = (
            images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )
        for job, px in zip(chunk, pixels, strict=True):
            (out / f"a{batch}-{job[3]}.png").write_bytes(png_bytes(px))
            pixels_by_seed[job[3]] = px
        done = time.perf_counter()
        seconds["generate"] += scored - started
        seconds["score"] += encoding - scored
        seconds["encode"] += done - encoding
    return seconds, pixels_by_seed


def load_plain_pipeline(base, run_dirs, args, dtype):
    """B's model: what a diffusers user writes, with FairSkin's artifacts loaded the documented
    way so that both paths run the very same weights."""
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from fairskin.diffusion.artifacts import load_run_artifacts
    from fairskin.generation.options import SCHEDULERS

    pipe = StableDiffusionPipeline.from_pretrained(
        base.path, dtype=dtype, safety_checker=None, requires_safety_checker=False
    )
    load_run_artifacts(pipe, run_dirs)
    scheduler_class = getattr(diffusers, SCHEDULERS[args.scheduler])
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(args.device))


def run_loop(pipe, jobs, args, negative_prompt: str, out: Path) -> tuple[dict, dict]:
    """B: one pipeline call per image, PIL output, PNG saved with Pillow's defaults."""
    import numpy as np
    import torch

    device = torch.device(args.device)

    def one(job, steps):
        return pipe(
            job[2],
            negative_prompt=negative_prompt,
            generator=torch.Generator(device).manual_seed(job[3]),
            num_inference_steps=steps,
            guidance_scale=args.guidance,
            height=args.size,
            width=args.size,
        ).images[0]

    one(jobs[0], 2)
    synchronize(device)
    seconds = {"generate": 0.0, "score": 0.0, "encode": 0.0}
    pixels_by_seed = {}
    for job in jobs:
        started = time.perf_counter()
        image = one(job, args.steps)  # PIL: the pipeline has already synchronised
        saving = time.perf_counter()
        image.save(out / f"b-{job[3]}.png")
        seconds["generate"] += saving - started
        seconds["encode"] += time.perf_counter() - saving
        pixels_by_seed[job[3]] = np.asarray(image)
    return seconds, pixels_by_seed


def benchmark(args: argparse.Namespace, work: Path) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.diffusion.training import library_versions
    from fairskin.generation.plan import candidate_seed
    from fairskin.generation.sampler import BatchGenerator
    from fairskin.generation.spec import DEFAULT_NEGATIVE_PROMPT

    device = torch.device(args.device)
    base = resolve_base_model(args.model, cache_dir=Path(args.cache_dir or work / "models"))
    run_dirs = train_artifacts(base, work, args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the training models are gone; their cached blocks too

    generator = BatchGenerator(base, run_dirs, scheduler=args.scheduler, device=args.device)
    args.size = args.size or generator.native_size
    jobs = []  # (diagnosis, fst, prompt, seed), cycling over the strata
    for i in range(args.images):
        dx, fst = STRATA[i % len(STRATA)]
        jobs.append(
            (
                dx,
                fst,
                prompt_for(dx, fst, available=generator.tokens),
                candidate_seed(BATCH_SEED, (dx, fst), i // len(STRATA)),
            )
        )
    scorer = build_scorer(args, args.size, work)
    out = work / "images"
    out.mkdir()

    dtype = generator.pipe.unet.dtype
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    print(
        f"Device: {device_name}; torch threads {args.threads}; "
        + ", ".join(f"{k} {v}" for k, v in library_versions().items())
    )
    print(
        f"Model: {args.model} at {args.size} px, {dtype}, scheduler {args.scheduler}, "
        f"{args.steps} steps, guidance {args.guidance}, {args.images} images over "
        f"{len(STRATA)} strata; tokens and LoRA of a 2-step run; scoring: "
        f"{scorer.extractors.clip[1].label}, random Inception/LPIPS/ResNet50\n"
    )

    plain = load_plain_pipeline(base, run_dirs, args, dtype)
    # Rounds alternate B and A, so a slow spell (another process, clock changes) hits both;
    # each row then shows its median round.
    started, busy, own = time.perf_counter(), busy_cpu_seconds(), time.process_time()
    loop_rounds, batched_rounds = [], {b: [] for b in args.batch_sizes}
    diffs = dict.fromkeys(args.batch_sizes, 0)
    for _ in range(args.repeats):
        loop_seconds, loop_pixels = run_loop(plain, jobs, args, DEFAULT_NEGATIVE_PROMPT, out)
        loop_rounds.append(loop_seconds)
        for batch in args.batch_sizes:
            seconds, pixels = run_batched(generator, scorer, jobs, batch, args=args, out=out)
            batched_rounds[batch].append(seconds)
            diffs[batch] = max(
                [diffs[batch]]
                + [
                    int(np.abs(pixels[s].astype(np.int16) - loop_pixels[s]).max())
                    for s in loop_pixels
                ]
            )
    del plain
    wall = time.perf_counter() - started
    others = max(0.0, busy_cpu_seconds() - busy - (time.process_time() - own))

    n = args.images
    loop_seconds = median_round(loop_rounds)
    loop_rate = n / (loop_seconds["generate"] + loop_seconds["encode"])
    print(f"Median of {args.repeats} round(s); each round runs B, then A at every batch size.\n")
    print(
        "| path | batch | generate s | score s | encode s | images/s without scoring | "
        "images/s with scoring | scoring share of wall time | ratio to B without / with "
        "scoring | max abs pixel diff to B |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| B: plain pipeline loop | 1 | {loop_seconds['generate']:.2f} | - | "
        f"{loop_seconds['encode']:.2f} | {loop_rate:.2f} | - | - | 1.00x | 0 |"
    )
    results = {batch: median_round(rounds) for batch, rounds in batched_rounds.items()}
    for batch, seconds in results.items():
        without = n / (seconds["generate"] + seconds["encode"])
        total = sum(seconds.values())
        print(
            f"| A: BatchGenerator + Scorer | {batch} | {seconds['generate']:.2f} | "
            f"{seconds['score']:.2f} | {seconds['encode']:.2f} | {without:.2f} | "
            f"{n / total:.2f} | {seconds['score'] / total:.1%} | "
            f"{without / loop_rate:.2f}x / {n / total / loop_rate:.2f}x | {diffs[batch]} |"
        )

    print(
        f"\nOther processes used {others:.1f} CPU-seconds during the {wall:.1f} s of timed "
        f"runs on {os.cpu_count()} cores (/proc/stat; near 0 means the figures are clean)."
    )
    per_image, unet_step, scoring = flops_per_image(generator, scorer, jobs[0], args)
    best_batch = min(results, key=lambda b: results[b]["generate"])
    best_rate = n / results[best_batch]["generate"]
    print(
        f"Counted FLOPs per image (FlopCounterMode over a whole generate call at batch 1, "
        f"1 and 2 steps): {per_image / 1e9:.1f} GFLOP, of which the UNet "
        f"{unet_step / 1e9:.1f} GFLOP per step (both guidance branches); scoring one "
        f"image: {scoring / 1e9:.1f} GFLOP ({scoring / per_image:.1%} of generating it)."
    )
    print(
        f"Generation alone at batch {best_batch}: {best_rate:.2f} images/s = "
        f"{per_image * best_rate / 1e12:.3f} TFLOP/s achieved."
    )
    if device.type == "cuda":
        peak = bf16_matmul_tflops(device)
        print(
            f"Dense bf16 matmul rate (8192^3, median of 10x10): {peak:.0f} TFLOP/s; "
            f"generation ({dtype}) reaches {per_image * best_rate / 1e12 / peak:.1%} of it."
        )


def main() -> None:
    args = parse_args()
    # Removed afterwards: with sd15-random the model folder alone is several GB.
    with tempfile.TemporaryDirectory(prefix="fairskin-bench-generation-") as work:
        benchmark(args, Path(work))


if __name__ == "__main__":
    main()
