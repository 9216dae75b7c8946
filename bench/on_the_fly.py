"""What on-the-fly generation costs a classifier run, against the obvious alternative in the
same run: the same classifier trained on already generated (released) synthetic images.

Both arms train the same classifier on the same drawn real images for the same epochs; arm A
draws its synthetic share from pre-made images, arm B from images the run generates before
each epoch (fairskin.classifier.on_the_fly) with a base model and no LoRA (speed does not
depend on what a LoRA learned). Reported: seconds per epoch of each arm, B's generation and
training seconds (from its own record), seconds per generated image, and the ratio B / A.

Usage: .venv/bin/python bench/on_the_fly.py [--model tiny|sd15-random] [--size 64]
       [--steps 10] [--per-epoch 16] [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
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
    parser.add_argument("--per-epoch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from fairskin.classifier.config import ClassifierConfig
    from fairskin.classifier.data import ClassifierItem
    from fairskin.classifier.model import CLASS_NAMES
    from fairskin.classifier.on_the_fly import (
        OnTheFlyCache,
        OnTheFlyPlan,
        generator_draw,
        interleaved_strata,
    )
    from fairskin.classifier.train import train_classifier
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.imaging.demo import demo_items
    from fairskin.progress import SilentProgress

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-otf-"))

    def drawn(seed: int, *, synthetic: bool) -> list[ClassifierItem]:
        out = []
        for item in demo_items(args.per_class, seed, size=64):
            path = work / f"{seed}-{item.file_name}"
            item.image.save(path)
            label = CLASS_NAMES.index(item.diagnosis.value)
            out.append(ClassifierItem(str(path), label, item.fst, synthetic=synthetic))
        return out

    real, test = drawn(1, synthetic=False), drawn(2, synthetic=False)
    released = drawn(3, synthetic=True)
    base = resolve_base_model(args.model, cache_dir=work / "models")
    common = {
        "arch": "resnet18",
        "image_size": 64,
        "batch_size": 16,
        "epochs": args.epochs,
        "bootstrap": 20,
        "learning_rate": 1e-3,
    }

    started = time.perf_counter()
    train_classifier(
        config=ClassifierConfig.build(common),
        train_items=real + released,
        test_items=test,
        run_dir=work / "released",
        progress=SilentProgress(),
    )
    released_seconds = time.perf_counter() - started

    config = ClassifierConfig.build(
        {
            **common,
            "on_the_fly_share": 1.0,
            "on_the_fly_model": 1,
            "on_the_fly_per_epoch": args.per_epoch,
            "on_the_fly_cache": args.per_epoch * 2,
            "on_the_fly_steps": args.steps,
        }
    )
    plan = OnTheFlyPlan(
        seed=0,
        per_epoch=args.per_epoch,
        cache=args.per_epoch * 2,
        strata=interleaved_strata(list(CLASS_NAMES), [1, 2, 3, 4, 5, 6]),
        micro_batch=config.on_the_fly_micro_batch,
    )
    cache = OnTheFlyCache(
        work / "fly",
        plan,
        lambda: generator_draw(base, [], steps=args.steps, guidance=7.5, size=args.size),
        label_of=CLASS_NAMES.index,
    )
    started = time.perf_counter()
    result = train_classifier(
        config=config,
        train_items=real,
        test_items=test,
        run_dir=work / "fly",
        progress=SilentProgress(),
        on_the_fly=cache,
    )
    fly_seconds = time.perf_counter() - started
    summary = result.evaluation["on_the_fly"]
    print(
        json.dumps(
            {
                "model": args.model,
                "size": args.size,
                "steps": args.steps,
                "per_epoch": args.per_epoch,
                "epochs": args.epochs,
                "real_images": len(real),
                "released_arm_seconds": round(released_seconds, 2),
                "on_the_fly_arm_seconds": round(fly_seconds, 2),
                "ratio": round(fly_seconds / released_seconds, 2),
                "generation_seconds": summary["generation_seconds"],
                "seconds_per_image": summary["seconds_per_image"],
                "training_seconds": summary["training_seconds"],
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{args.threads} threads, torch {torch.__version__}",
            }
        )
    )


if __name__ == "__main__":
    main()
