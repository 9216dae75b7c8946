"""What label guidance costs at generation: `BatchGenerator.generate` at label scale 0 (the
plain pipeline, two UNet passes per step) against label scale 2 (three passes), same prompts,
seeds and settings, in one run.

Usage: .venv/bin/python bench/label_guidance.py [--model tiny|sd15-random] [--size 64]
       [--steps 10] [--images 4] [--repeats 3] [--threads 2]

The model is the base model with a random label table of the UNet's time-embedding width
written beside a fresh random LoRA: speed does not depend on what they
learned. Prints one JSON line: seconds per image (median of the repeats) for each scale and
their ratio, and the UNet passes per step of each.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from fairskin.diffusion.artifacts import save_lora
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.label_guidance import unet_passes
    from fairskin.diffusion.labels_conditioning import (
        FILENAME,
        LabelEmbedding,
        save_labels,
        time_embedding_width,
    )
    from fairskin.generation.sampler import BatchGenerator

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = resolve_base_model(args.model, cache_dir=Path(tmp) / "models")
        pipe = StableDiffusionPipeline.from_pretrained(base.path, safety_checker=None)
        torch.manual_seed(0)
        pipe.unet.add_adapter(
            LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_v"], init_lora_weights=False)
        )
        run = Path(tmp) / "run"
        run.mkdir()
        save_lora(run, pipe.unet)
        labels = LabelEmbedding(time_embedding_width(pipe.unet))
        with torch.no_grad():
            labels.dx.normal_()
            labels.fst.normal_()
        save_labels(run / FILENAME, labels)
        del pipe
        gen = BatchGenerator(base, [run], scheduler="ddim", device=args.device)
        prompts = ["a dermoscopic image of melanoma"] * args.images
        seeds = list(range(args.images))
        pairs = [("MEL", 1 + k % 6) for k in range(args.images)]
        timings: dict[float, list[float]] = {0.0: [], 2.0: []}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            for scale in timings:
                start = time.perf_counter()
                gen.generate(
                    prompts, seeds, steps=args.steps, size=args.size, labels=pairs,
                    label_scale=scale,
                )  # fmt: skip
                if gen.device.type == "cuda":
                    torch.cuda.synchronize()
                if repeat:
                    timings[scale].append((time.perf_counter() - start) / args.images)
    per_image = {scale: statistics.median(t) for scale, t in timings.items()}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "device": str(gen.device),
                "model": args.model,
                "size": args.size,
                "steps": args.steps,
                "images": args.images,
                "threads": args.threads,
                "seconds_per_image": {str(k): round(v, 4) for k, v in per_image.items()},
                "unet_passes_per_step": {str(k): unet_passes(k) for k in per_image},
                "ratio_guided_to_plain": round(per_image[2.0] / per_image[0.0], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
