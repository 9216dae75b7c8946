"""Does the class diversity loss make generated images more varied? (issue 16, point 5)

Usage: .venv/bin/python bench/diversity_experiment.py [--part toy|tiny|both] [--seeds 0,1,2]
       [--weights 0,0.1,1] [--steps 60] [--images 6] [--threads 2] [--form neg_log_distance]

Part "toy" (seconds): the loss alone against a known force toward collapse. A linear map
x = W z + b of random codes z is fitted to one target vector (mean squared error, whose optimum
is every x equal to the target: D = 0), plus weight x the diversity loss on x (one group, batch
4, pool 16), with Adam; the diversity D of x over 64 fixed codes is read every 100 steps. Both
forms are run at the same seeds, so the codes and initialisation are the same.

Part "tiny":
on the tiny model (the SD v1.5 architecture at toy width, random weights) and procedurally
drawn lesions, per training seed: one textual-inversion run (no diversity term), then one LoRA
run on top of it per diversity weight, everything else equal (same data, same seed, so the
same batches, noise and LoRA initialisation). Each LoRA is sampled at the same seeds per
group (diagnosis x skin type) and the spread of the images within each group is measured:

- pixel: mean pairwise cosine distance of the images in [-1, 1] (the VAE's input range), so
  a uniformly grey image is the zero vector rather than every image sharing a large offset;
- lpips: mean pairwise LPIPS (Zhang et al. 2018) with the package's calibrated linear layers on
  a seeded random AlexNet trunk (`fairskin.metrics.extractors.lpips_metric` without weights:
  the ImageNet trunk cannot be downloaded here), so uncalibrated: a fixed random-feature
  perceptual distance, computed on the images upsampled to 64 px;
- train D: the mean cosine distance the loss itself saw over the last quarter of training
  (from the run's diversity.csv; weight 0 runs log none, so it is measured for weight > 0).

Printed: per weight, the mean over seeds (and the standard deviation across seeds) of the
group-averaged diversity, and the paired difference from weight 0 at the same seed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GROUPS = [("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5)]
GENERATION_SEED = 5000  # images of group g use seeds GENERATION_SEED + 100 g + k


@dataclass(frozen=True)
class Result:
    latent: float  # group-averaged mean pairwise cosine distance of the generated latents
    pixel: float  # group-averaged mean pairwise cosine distance of the images in [-1, 1]
    lpips: float  # group-averaged mean pairwise LPIPS, random AlexNet trunk
    train_d: float | None  # the loss's own D over the last quarter of training


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("toy", "tiny", "both"), default="both")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--weights", default="0,0.1,1", help="diversity weights; 0 is the control")
    parser.add_argument("--steps", type=int, default=60, help="LoRA steps per run")
    parser.add_argument("--images", type=int, default=6, help="generated images per group")
    parser.add_argument(
        "--train-images", type=int, default=1, help="training images per group (1: collapse-prone)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--inference-steps", type=int, default=10)
    parser.add_argument("--form", default="neg_log_distance")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        parser.error("--seeds takes whole numbers and --weights numbers, separated by commas")
    if 0.0 not in args.weights:
        parser.error("--weights must include 0, the control")
    if args.images < 2 or args.steps < 1:
        parser.error("--images must be at least 2 (a pair) and --steps at least 1")
    return args


def training_items(folder: Path, per_group: int) -> list:
    from fairskin.diffusion.training import TrainItem
    from fairskin.imaging.demo import draw_lesion

    items = []
    for g, (dx, fst) in enumerate(GROUPS):
        for k in range(per_group):
            path = folder / f"{dx}-{fst}-{k}.png"
            draw_lesion(dx, fst, seed=100 * g + k, size=64).save(path)
            items.append(TrainItem(str(path), dx, fst))
    return items


def train_lora(base, items, *, ti_dir: Path, seed: int, weight: float, args) -> Path:
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training import train
    from fairskin.progress import SilentProgress

    run_dir = ti_dir.parent / f"lora-seed{seed}-w{weight:g}"
    config = TrainConfig.build(
        "lora",
        {
            "steps": args.steps,
            "learning_rate": args.learning_rate,
            "lr_scheduler": "constant",
            "grad_accumulation": 1,
            "checkpoint_every": 10_000,
            "validation_every": 10_000,
            "validation_inference_steps": 1,
            "diversity_weight": weight,
            "diversity_form": args.form,
            "seed": seed,
        },
    )
    train(
        config=config,
        base=base,
        items=items,
        run_dir=run_dir,
        parents=[ti_dir],
        progress=SilentProgress(),
        device="cpu",
    )
    return run_dir


def pixel_diversity(images) -> float:
    from fairskin.metrics.diversity import mean_pairwise_cosine_distance

    return mean_pairwise_cosine_distance((images * 2 - 1).flatten(1).double().numpy())


def lpips_diversity(lpips, images) -> float:
    import torch
    import torch.nn.functional as F

    up = F.interpolate(images, size=64, mode="bilinear", align_corners=False)
    pairs = list(itertools.combinations(range(len(images)), 2))
    left = torch.tensor([a for a, _ in pairs])
    right = torch.tensor([b for _, b in pairs])
    return float(lpips(up[left], up[right]).mean())


def training_distance(run_dir: Path) -> float | None:
    path = run_dir / "diversity.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        values = [float(r["mean_distance"]) for r in csv.DictReader(fh) if r["mean_distance"]]
    tail = values[-max(1, len(values) // 4) :]
    return statistics.fmean(tail) if tail else None


def measure(base, run_dirs: list[Path], lpips, args) -> Result:
    import torch

    from fairskin.diffusion.tokens import prompt_for
    from fairskin.generation.sampler import BatchGenerator
    from fairskin.generation.spec import DEFAULT_NEGATIVE_PROMPT
    from fairskin.metrics.diversity import mean_pairwise_cosine_distance

    generator = BatchGenerator(base, run_dirs, scheduler="ddim", device="cpu")
    pipe = generator.pipe
    latent, pixel, perceptual = [], [], []
    for g, (dx, fst) in enumerate(GROUPS):
        prompt = prompt_for(dx, fst, available=generator.tokens)
        n = args.images
        with torch.no_grad():
            latents = pipe(
                prompt=[prompt] * n,
                negative_prompt=[DEFAULT_NEGATIVE_PROMPT] * n,
                generator=[
                    torch.Generator().manual_seed(GENERATION_SEED + 100 * g + k) for k in range(n)
                ],
                num_inference_steps=args.inference_steps,
                guidance_scale=7.5,
                output_type="latent",
            ).images
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        images = (decoded / 2 + 0.5).clamp(0, 1)
        latent.append(mean_pairwise_cosine_distance(latents.flatten(1).double().numpy()))
        pixel.append(pixel_diversity(images))
        perceptual.append(lpips_diversity(lpips, images))
    return Result(
        statistics.fmean(latent),
        statistics.fmean(pixel),
        statistics.fmean(perceptual),
        training_distance(run_dirs[-1]),
    )


TIMESTEPS = (50, 250, 500, 750, 950)


def d_by_timestep(base, run_dirs: list[Path], noises: int = 8) -> dict[int, float]:
    """What the loss sees: D of the pooled clean-latent estimates of one training image under
    `noises` different noises at each timestep, averaged over the groups."""
    import torch
    from diffusers import DDPMScheduler

    from fairskin.diffusion.losses import diversity_embedding, predicted_clean_latents
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.diffusion.training import TrainItem
    from fairskin.diffusion.training_setup import load_images
    from fairskin.generation.sampler import BatchGenerator
    from fairskin.metrics.diversity import mean_pairwise_cosine_distance

    scheduler = DDPMScheduler.from_pretrained(base.path, subfolder="scheduler")
    generator = BatchGenerator(base, run_dirs, device="cpu")
    pipe, work = generator.pipe, run_dirs[0].parent
    found: dict[int, list[float]] = {t: [] for t in TIMESTEPS}
    for dx, fst in GROUPS:
        item = TrainItem(str(work / f"{dx}-{fst}-0.png"), dx, fst)
        with torch.no_grad():
            pixels = load_images([item], [0], 32)
            latent = pipe.vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(0))
            latent = latent * pipe.vae.config.scaling_factor
            ids = pipe.tokenizer(
                [prompt_for(dx, fst, available=generator.tokens)],
                padding="max_length",
                max_length=pipe.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            hidden = pipe.text_encoder(ids)[0].repeat(noises, 1, 1)
            for t in TIMESTEPS:
                noise = torch.randn(
                    (noises, *latent.shape[1:]), generator=torch.Generator().manual_seed(t)
                )
                steps = torch.full((noises,), t)
                noisy = scheduler.add_noise(latent.repeat(noises, 1, 1, 1), noise, steps)
                pred = pipe.unet(noisy, steps, hidden).sample
                clean = predicted_clean_latents(noisy, pred, scheduler.alphas_cumprod[steps])
                embedded = diversity_embedding(clean).double().numpy()
                found[t].append(mean_pairwise_cosine_distance(embedded))
    return {t: statistics.fmean(v) for t, v in found.items()}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def report(results: dict[tuple[int, float], Result], args) -> None:
    print(
        "\n| weight | latent diversity | pixel diversity | LPIPS diversity (random trunk) "
        "| train D (last 1/4) |"
    )
    print("|---|---|---|---|---|")
    for w in args.weights:
        rows = [results[(s, w)] for s in args.seeds]
        train_d = [r.train_d for r in rows if r.train_d is not None]
        logged = spread(train_d) if train_d else "not logged"
        print(
            f"| {w:g} | {spread([r.latent for r in rows])} | {spread([r.pixel for r in rows])} | "
            f"{spread([r.lpips for r in rows])} | {logged} |"
        )
    print("\nPaired with weight 0 at the same seed (weight > 0 minus weight 0):\n")
    print("| weight | Δ latent | seeds higher | Δ pixel | seeds higher | Δ LPIPS | seeds higher |")
    print("|---|---|---|---|---|---|---|")
    for w in args.weights:
        if w == 0:
            continue
        cells = []
        for metric in ("latent", "pixel", "lpips"):
            diffs = [
                getattr(results[(s, w)], metric) - getattr(results[(s, 0.0)], metric)
                for s in args.seeds
            ]
            cells += [spread(diffs), f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]
        print(f"| {w:g} | " + " | ".join(cells) + " |")
    print("\nPer seed:")
    for (s, w), r in results.items():
        print(f"  seed {s} weight {w:g}: {asdict(r)}")


TOY_STEPS = 600
TOY_FORMS = ("similarity", "neg_log_distance")


def toy_trajectory(form: str, weight: float, seed: int) -> list[float]:
    """D of the fitted map's outputs after every 100 Adam steps (see the module docstring)."""
    import torch

    from fairskin.diffusion.losses import DiversityLoss
    from fairskin.metrics.diversity import mean_pairwise_cosine_distance

    g = torch.Generator().manual_seed(seed)
    target = torch.randn(16, generator=g)
    w = (0.5 * torch.randn(16, 8, generator=g)).requires_grad_(True)
    b = torch.zeros(16, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=1e-2)
    diversity = DiversityLoss(16, form=form)
    codes = torch.randn(64, 8, generator=torch.Generator().manual_seed(10_000 + seed))
    out = []
    for step in range(1, TOY_STEPS + 1):
        x = torch.randn(4, 8, generator=g) @ w.T + b
        loss = ((x - target) ** 2).mean()
        if weight:
            loss = loss + weight * diversity(x, ["MEL:1"] * 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                x = codes @ w.T + b
            out.append(mean_pairwise_cosine_distance(x.double().numpy()))
    return out


def toy_part(args) -> None:
    print(f"\nToy: D after 100..{TOY_STEPS} steps, mean over seeds {args.seeds} (min-max)\n")
    print(
        "| form | weight | "
        + " | ".join(f"step {s}" for s in range(100, TOY_STEPS + 1, 100))
        + " |"
    )
    print("|---|---|" + "---|" * (TOY_STEPS // 100))
    for weight in args.weights:
        for form in TOY_FORMS if weight else TOY_FORMS[:1]:
            runs = [toy_trajectory(form, weight, s) for s in args.seeds]
            cells = [
                f"{statistics.fmean(v):.4f} ({min(v):.4f}-{max(v):.4f})"
                for v in zip(*runs, strict=True)
            ]
            print(f"| {form if weight else '(none)'} | {weight:g} | " + " | ".join(cells) + " |")


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from fairskin.diffusion.training import library_versions

    started = time.monotonic()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
        + ", ".join(f"{k} {v}" for k, v in library_versions().items())
    )
    if args.part in ("toy", "both"):
        toy_part(args)
    if args.part in ("tiny", "both"):
        tiny_part(args)
    print(f"\nWall time {time.monotonic() - started:.0f} s")


def tiny_part(args) -> None:
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training import train
    from fairskin.metrics.extractors import lpips_metric
    from fairskin.progress import SilentProgress

    work = Path(tempfile.mkdtemp(prefix="fairskin-diversity-"))
    base = resolve_base_model("tiny", cache_dir=work / "models")
    items = training_items(work, args.train_images)
    lpips, _ = lpips_metric(None, device="cpu")
    print(
        f"\nTiny model at 32 px; {len(GROUPS)} groups x {args.train_images} training images; "
        f"LoRA {args.steps} steps (lr {args.learning_rate:g}, batch 4) on a 20-step TI parent; "
        f"form {args.form}; "
        f"{args.images} images per group, DDIM {args.inference_steps} steps, guidance 7.5"
    )
    results: dict[tuple[int, float], Result] = {}
    for seed in args.seeds:
        ti_dir = work / f"ti-seed{seed}"
        ti = {"steps": 20, "grad_accumulation": 1, "lr_warmup_steps": 0}
        ti.update(validation_every=10_000, checkpoint_every=10_000, validation_inference_steps=1)
        train(
            config=TrainConfig.build(
                "textual_inversion", {**ti, "diversity_weight": 0.0, "seed": seed}
            ),
            base=base,
            items=items,
            run_dir=ti_dir,
            progress=SilentProgress(),
            device="cpu",
        )
        for weight in args.weights:
            lora_dir = train_lora(base, items, ti_dir=ti_dir, seed=seed, weight=weight, args=args)
            results[(seed, weight)] = measure(base, [ti_dir, lora_dir], lpips, args)
            print(f"seed {seed} weight {weight:g}: {asdict(results[(seed, weight)])}", flush=True)
    report(results, args)
    seed, top = args.seeds[0], max(args.weights)
    print(f"\nD the loss sees, by timestep (seed {seed}; one training image, 8 noises):\n")
    print("| weight | " + " | ".join(f"t = {t}" for t in TIMESTEPS) + " |")
    print("|---|" + "---|" * len(TIMESTEPS))
    for weight in sorted({0.0, top}):
        run_dirs = [work / f"ti-seed{seed}", work / f"lora-seed{seed}-w{weight:g}"]
        by_t = d_by_timestep(base, run_dirs)
        print(f"| {weight:g} | " + " | ".join(f"{by_t[t]:.3f}" for t in TIMESTEPS) + " |")
    print(f"\nWork folder {work}")


if __name__ == "__main__":
    main()
