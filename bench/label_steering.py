"""Does generation follow the requested skin-type label? Measured in latent space.

See docs/validation/label-conditioning.md ("Does the output follow the requested label?").

For each arm (the tiny model's VAE scaling: SD v1.5's 0.18215 or calibrated to unit latent
spread; its prediction type: epsilon or v_prediction), two LoRA runs from one 1-step
textual-inversion parent on drawn MEL/NV images of skin types I and VI, one with label
conditioning. Generated latents are projected on d = mean type-VI training latent minus mean
type-I one (unit length); the gap is the projection asking for VI minus asking for I, from the
same starting noise, per seed (`fairskin.diffusion.label_steering`). Also the decoded images'
ITA (`fairskin.imaging.ita`), per requested type.

    .venv/bin/python bench/label_steering.py --steps 100
    .venv/bin/python bench/label_steering.py --steps 1000 \
        --arm calibrated:epsilon --arm sd15:epsilon
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIAGNOSES = ("MEL", "NV")
NO_TYPE = "A dermoscopic image of {diagnosis}, high quality medical photograph"
ARMS = ("sd15:epsilon", "sd15:v_prediction", "calibrated:epsilon", "calibrated:v_prediction")


def _ita(pixels: torch.Tensor) -> float:
    from fairskin.imaging.ita import ita_value

    array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    try:
        return ita_value(Image.fromarray(array))
    except ValueError:
        return float("nan")


def _mean_ita(pipe: Any, latents: torch.Tensor) -> float:
    """Mean ITA of the images decoded from latents (C, h, w each)."""
    with torch.no_grad():
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    values = [_ita((image.float() / 2 + 0.5).clamp(0, 1)) for image in images]
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else float("nan")


def _prompts(tokens: list[str], without_type: bool) -> Callable[[str, int], str]:
    """The training prompt (it names the skin type), or the same without the skin type."""
    from fairskin.diffusion.tokens import prompt_for

    def prompt(dx: str, fst: int) -> str:
        if without_type:
            return prompt_for(dx, fst, available=tokens, template=NO_TYPE)
        return prompt_for(dx, fst, available=tokens)

    return prompt


def _arm(args: argparse.Namespace, arm: str, work: Path, tiny: Any, items: list[Any]) -> None:
    from diffusers import AutoencoderKL

    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.label_steering import (
        asked_latents,
        gap_along,
        trained_pipeline,
        tuned_model,
        type_direction,
    )
    from fairskin.diffusion.training import train
    from fairskin.diffusion.training_setup import load_images
    from fairskin.progress import SilentProgress

    scaling_name, prediction = arm.split(":")
    folder = work / arm.replace(":", "-")
    vae = AutoencoderKL.from_pretrained(tiny.path, subfolder="vae")
    pixels = load_images(items, list(range(len(items))), tiny.native_size())
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mean
    scaling = float(1 / raw.std()) if scaling_name == "calibrated" else vae.config.scaling_factor
    tuned = tuned_model(
        Path(tiny.path), folder / "model", scaling_factor=scaling, prediction_type=prediction
    )
    base = resolve_base_model(str(tuned), cache_dir=work / "models")
    latents = raw * scaling
    fsts = [i.fst for i in items]
    direction = type_direction(latents, fsts, low=1, high=6)
    along = latents.flatten(1) @ direction
    types = torch.tensor(fsts)
    training_gap = float(along[types == 6].mean() - along[types == 1].mean())
    fast = {
        "validation_every": 100_000,
        "validation_inference_steps": 1,
        "lr_warmup_steps": 0,
        "grad_accumulation": 1,
        "batch_size": 4,
        "diversity_weight": 0.0,
        "cache_latents": True,
        "seed": args.train_seed,
    }
    started = time.monotonic()
    ti = train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, **fast}),
        base=base,
        items=items,
        run_dir=folder / "ti",
        progress=SilentProgress(),
    )
    runs = {}
    for name, extra in (
        ("without labels", {}),
        ("with labels", {"label_conditioning": True, "label_learning_rate": args.label_lr}),
    ):
        config = TrainConfig.build(
            "lora", {"steps": args.steps, "learning_rate": args.lr, **extra, **fast}
        )
        runs[name] = train(
            config=config,
            base=base,
            items=items,
            run_dir=folder / name.replace(" ", "-"),
            parents=[ti.run_dir],
            progress=SilentProgress(),
        )
    print(
        f"\n{arm}: VAE scaling {scaling:.4f}, training latents std {latents.std():.3f}, "
        f"training gap along d {training_gap:.2f}; 2 runs trained in "
        f"{time.monotonic() - started:.0f} s; final loss without / with labels "
        f"{runs['without labels'].final_loss:.4f} / {runs['with labels'].final_loss:.4f}"
    )
    print("| text | run | label scale | gap VI - I (spread) | gap / training gap | "
          "latent std | ITA I asked | ITA VI asked |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    settings = [("names the type", "without labels", 0.0)]
    settings += [("names the type", "with labels", s) for s in args.scales]
    settings += [("no type", "with labels", s) for s in args.scales]
    for text, name, scale in settings:
        result = runs[name]
        pipe = trained_pipeline(base.path, result)
        asked = asked_latents(
            pipe,
            diagnoses=DIAGNOSES,
            prompt=_prompts(result.tokens, text == "no type"),
            labelled=name == "with labels",
            label_scale=scale,
            seeds=args.seeds,
            text_scale=args.text_scale,
            steps=args.sample_steps,
        )
        gap = gap_along(asked, direction)
        ita = [_mean_ita(pipe, asked[:, side].flatten(0, 1)) for side in (0, 1)]
        label = f"{scale:g}" if name == "with labels" else "(none)"
        print(
            f"| {text} | {name} | {label} | {gap.mean:.3f} ({gap.spread:.3f}) | "
            f"{gap.mean / training_gap:.3f} | {asked.std():.2f} | {ita[0]:.1f} | {ita[1]:.1f} |"
        )
    from fairskin.diffusion.labels_conditioning import attached_labels

    table = attached_labels(runs["with labels"].unet)
    if table is not None:
        print(
            f"label rows: |fst I - fst VI| {(table.fst[0] - table.fst[5]).norm():.3f}, "
            f"|fst I| {table.fst[0].norm():.3f}, |dx MEL| {table.dx[0].norm():.3f}"
        )


def main() -> None:
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.training import TrainItem
    from fairskin.diffusion.versions import library_versions
    from fairskin.imaging.demo import draw_lesion
    from fairskin.imaging.ita import ita_value

    parser = argparse.ArgumentParser()
    parser.add_argument("--arm", action="append", choices=ARMS, help="scaling:prediction")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--label-lr", type=float, default=1e-2)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--per-cell", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--sample-steps", type=int, default=8)
    parser.add_argument("--text-scale", type=float, default=1.0)
    parser.add_argument("--scales", default="0,1,3")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.scales = [float(v) for v in args.scales.split(",")]
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="label-steering-"))
    tiny = resolve_base_model("tiny", cache_dir=work / "models")
    items = []
    for dx in DIAGNOSES:
        for fst in (1, 6):
            for k in range(args.per_cell):
                path = work / f"{dx}-{fst}-{k}.png"
                draw_lesion(dx, fst, seed=k, size=64).save(path)
                items.append(TrainItem(str(path), dx, fst))
    print(
        f"tiny model; {len(items)} drawn images (MEL/NV x FST I/VI; ITA I "
        f"{statistics.fmean(ita_value(Image.open(i.path)) for i in items if i.fst == 1):.1f}, VI "
        f"{statistics.fmean(ita_value(Image.open(i.path)) for i in items if i.fst == 6):.1f}); "
        f"{args.steps} LoRA steps at lr {args.lr:g}, label lr {args.label_lr:g}, batch 4, "
        f"training seed {args.train_seed}; sampling {args.seeds} seeds x 2 diagnoses, "
        f"{args.sample_steps} DDIM steps, text scale {args.text_scale:g}; {args.threads} thread(s)"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))
    for arm in args.arm or ARMS:
        _arm(args, arm, work, tiny, items)


if __name__ == "__main__":
    main()
