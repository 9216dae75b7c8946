"""Does the skin tone of generated images follow the requested skin-type label?

See docs/validation/label-conditioning.md.

Two LoRA runs on the tiny model from the same textual-inversion parent and the same drawn
images of skin types I and VI: one with label conditioning, one without. Each generates the
same prompts (which name the skin type, as training prompts do) at fixed seeds; the ITA of
each image is measured (fairskin.imaging.ita). Reported: mean ITA per requested type and the
gap I - VI, for the run without labels, and with labels at label scales 0 (null label), 1, 3.

    .venv/bin/python bench/label_conditioning_experiment.py --steps 150 --seeds 8

``--label-lr`` (repeatable) trains one labelled run per label-table learning rate
(TrainConfig.label_learning_rate); ``--lr`` is the LoRA's; ``--train-seed`` the runs' seed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ita(image: torch.Tensor) -> float:
    from fairskin.imaging.ita import ita_value

    array = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    try:
        return ita_value(Image.fromarray(array))
    except ValueError:
        return float("nan")


def main() -> None:
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.label_guidance import sample_with_labels
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.diffusion.versions import library_versions
    from fairskin.imaging.demo import draw_lesion
    from fairskin.progress import SilentProgress

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--per-cell", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--label-lr", type=float, action="append")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--scales", default="0,1,3")
    args = parser.parse_args()
    label_lrs = args.label_lr or [1e-3]
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="labels-exp-"))
    base = resolve_base_model("tiny", cache_dir=work / "models")
    items = []
    for dx in ("MEL", "NV"):
        for fst in (1, 6):
            for k in range(args.per_cell):
                path = work / f"{dx}-{fst}-{k}.png"
                draw_lesion(dx, fst, seed=k, size=64).save(path)
                items.append(TrainItem(str(path), dx, fst))
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
    ti = train(
        config=TrainConfig.build("textual_inversion", {"steps": 1, **fast}),
        base=base,
        items=items,
        run_dir=work / "ti",
        progress=SilentProgress(),
    )
    runs = {}
    started = time.monotonic()
    plan = [("without labels", {})] + [
        (f"labels lr {lr:g}", {"label_conditioning": True, "label_learning_rate": lr})
        for lr in label_lrs
    ]
    for name, extra in plan:
        config = TrainConfig.build(
            "lora", {"steps": args.steps, "learning_rate": args.lr, **extra, **fast}
        )
        runs[name] = train(
            config=config,
            base=base,
            items=items,
            run_dir=work / name.replace(" ", "-"),
            parents=[ti.run_dir],
            progress=SilentProgress(),
        )
    print(f"training {len(runs)} runs: {time.monotonic() - started:.0f} s ({work})")
    print(f"tiny model, {len(items)} drawn images (MEL/NV x FST I/VI), {args.steps} LoRA steps")
    print(f"LoRA lr {args.lr:g}, training seed {args.train_seed}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))
    print("run | label scale | mean ITA asked I | mean ITA asked VI | gap I - VI")
    from fairskin.diffusion.labels_conditioning import attached_labels

    for name, _ in plan[1:]:
        table = attached_labels(runs[name].unet)
        if table is not None:
            gap = (table.fst[0] - table.fst[5]).norm().item()
            print(
                f"{name}: |fst I - fst VI| {gap:.3f}, |dx| mean {table.dx.norm(dim=1).mean():.3f}"
            )
    scales = [float(v) for v in args.scales.split(",")]
    settings = [("without labels", 0.0)] + [(n, sc) for n, _ in plan[1:] for sc in scales]
    for name, scale in settings:
        result = runs[name]
        pipe = StableDiffusionPipeline.from_pretrained(
            base.path, safety_checker=None, requires_safety_checker=False
        )
        pipe.unet, pipe.text_encoder, pipe.tokenizer = (
            result.unet.eval(),
            result.text_encoder.eval(),
            result.tokenizer,
        )
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        means = {}
        for fst in (1, 6):
            values = []
            for dx in ("MEL", "NV"):
                prompts = [prompt_for(dx, fst, available=result.tokens)] * args.seeds
                labels = [(dx, fst)] * args.seeds if name != "without labels" else None
                images = sample_with_labels(
                    pipe, prompts, labels, text_scale=3.0, label_scale=scale, steps=10, seed=100
                )
                values += [_ita(image) for image in images]
            finite = [v for v in values if not math.isnan(v)]
            means[fst] = statistics.fmean(finite) if finite else float("nan")
        print(f"{name} | {scale:g} | {means[1]:.1f} | {means[6]:.1f} | {means[1] - means[6]:.1f}")
    for fst in (1, 6):
        drawn = statistics.fmean(_ita_file(i.path) for i in items if i.fst == fst)
        print(f"training images of FST {fst}: mean ITA {drawn:.1f}")


def _ita_file(path: str) -> float:
    from fairskin.imaging.ita import ita_value

    return ita_value(Image.open(path))


if __name__ == "__main__":
    main()
