"""Does a trained label table lower the denoising loss of its own images? (label-conditioning.md)

Takes the folder `bench/label_conditioning_experiment.py` worked in (it prints it): the
textual-inversion run `ti`, the labelled LoRA run `with-labels` and the drawn images
`<DX>-<FST>-<k>.png`. For every image, the LoRA model's denoising loss at fixed seeded
noise and timesteps with: its own label, the same diagnosis on the opposite skin type
(I <-> VI), and the null label. A table that learned the skin types gives its own label the
lowest loss.

    .venv/bin/python bench/label_loss_check.py /tmp/labels-exp-XXXX --draws 32
    .venv/bin/python bench/label_loss_check.py /tmp/labels-exp-XXXX --run labels-lr-0.01
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from fairskin.diffusion.artifacts import load_run_artifacts
    from fairskin.diffusion.labels_conditioning import (
        FILENAME,
        attach_labels,
        label_indices,
        load_labels,
    )
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.diffusion.training import TrainItem
    from fairskin.diffusion.training_setup import load_images

    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--run", default="with-labels", help="the labelled run's folder name")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work: Path = args.work
    base = next((work / "models").rglob("model_index.json")).parent
    pipe = StableDiffusionPipeline.from_pretrained(
        base, safety_checker=None, requires_safety_checker=False
    )
    tokens = load_run_artifacts(pipe, [work / "ti", work / args.run])
    attach_labels(pipe.unet, load_labels(work / args.run / FILENAME))
    pipe.unet.eval()
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    items = []
    for path in sorted(work.glob("*-*-*.png")):
        dx, fst, _ = path.stem.split("-")
        items.append(TrainItem(str(path), dx, int(fst)))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    losses: dict[str, list[float]] = {"own label": [], "opposite skin type": [], "null label": []}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pixels = load_images(items, list(range(len(items))), size)
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        for i, item in enumerate(items):
            ids = pipe.tokenizer(
                [prompt_for(item.diagnosis, item.fst, available=tokens)] * args.draws,
                padding="max_length",
                max_length=pipe.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            text = pipe.text_encoder(ids)[0]
            clean = latents[i : i + 1].repeat(args.draws, 1, 1, 1)
            noise = torch.randn(clean.shape, generator=generator)
            t = torch.randint(0, 1000, (args.draws,), generator=generator)
            noisy = scheduler.add_noise(clean, noise, t)
            asked = {
                "own label": (item.diagnosis, item.fst),
                "opposite skin type": (item.diagnosis, 7 - item.fst),
                "null label": (None, None),
            }
            for name, label in asked.items():
                labels = label_indices([label] * args.draws)
                pred = pipe.unet(noisy, t, text, class_labels=labels).sample
                losses[name].append(float(((pred - noise) ** 2).mean()))
    own = losses["own label"]
    print(f"{len(items)} images x {args.draws} seeded (noise, timestep) draws each")
    for name, values in losses.items():
        wins = sum(o < v for o, v in zip(own, values, strict=True))
        print(
            f"{name}: mean loss {statistics.fmean(values):.5f}; "
            f"own label lower on {wins}/{len(own)} images"
        )


if __name__ == "__main__":
    main()
