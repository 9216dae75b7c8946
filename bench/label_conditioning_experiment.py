"""Does the skin tone of generated images follow the requested skin-type label?

See docs/validation/label-conditioning.md.

Two LoRA runs on the tiny model from the same textual-inversion parent and the same drawn
images of skin types I and VI: one with label conditioning, one without. Each generates the
same prompts (which name the skin type, as training prompts do) at fixed seeds; the ITA of
each image is measured (fairskin.imaging.ita). Reported: mean ITA per requested type and the
gap I - VI, for the run without labels, and with labels at label scales 0 (null label), 1, 3.

    .venv/bin/python bench/label_conditioning_experiment.py --steps 150 --seeds 8
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
    args = parser.parse_args()
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
    for name, labels_on in (("without labels", False), ("with labels", True)):
        config = TrainConfig.build(
            "lora",
            {"steps": args.steps, "learning_rate": 5e-3, "label_conditioning": labels_on, **fast},
        )
        runs[name] = train(
            config=config,
            base=base,
            items=items,
            run_dir=work / name.replace(" ", "-"),
            parents=[ti.run_dir],
            progress=SilentProgress(),
        )
    print(f"training both runs: {time.monotonic() - started:.0f} s")
    print(f"tiny model, {len(items)} drawn images (MEL/NV x FST I/VI), {args.steps} LoRA steps")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))
    print("run | label scale | mean ITA asked I | mean ITA asked VI | gap I - VI")
    settings = [("without labels", 0.0), ("with labels", 0.0), ("with labels", 1.0)]
    settings.append(("with labels", 3.0))
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
                labels = [(dx, fst)] * args.seeds if name == "with labels" else None
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
