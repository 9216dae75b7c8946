"""The optimized generation path (fairskin.generation.optimize) against the eager one on the
tiny model with its trained tokens and LoRA, on CPU in fp32: at the same seeds the pixels differ
by at most 1 level of 255 and every candidate gets the same filter verdict; the eager path, the
default, is untouched by it.

The scoring networks have seeded random weights (nothing is downloaded) and the thresholds are
applied, so a check that flipped on a rounding difference would show."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.tokens import prompt_for
from fairskin.generation.extractors import Extractors
from fairskin.generation.optimize import compute_dtype, optimize_pipeline
from fairskin.generation.reference import Reference
from fairskin.generation.sampler import BatchGenerator
from fairskin.generation.scoring import Scorer
from fairskin.generation.scoring_config import CHECK_NAMES, ScoringConfig
from fairskin.imaging.demo import draw_lesion

TINY_CLIP = str(Path(__file__).resolve().parents[1] / "fixtures" / "tiny_clip.json")
STRATA = [("MEL", 2), ("MEL", 6), ("NV", 3), ("NV", 5)]
SEEDS = [11, 12, 13, 14, 15, 16, 17, 18]
SIZE = 32


@pytest.fixture(scope="module")
def generators(tiny_artifacts):
    from django.conf import settings

    base = resolve_base_model("tiny", cache_dir=Path(settings.FAIRSKIN_MODEL_CACHE))
    eager = BatchGenerator(base, list(tiny_artifacts), device="cpu")
    optimized = BatchGenerator(base, list(tiny_artifacts), device="cpu", optimized=True)
    return eager, optimized


def jobs(generator):
    return [
        (dx, fst, prompt_for(dx, fst, available=generator.tokens), seed)
        for (dx, fst), seed in zip(STRATA * 2, SEEDS, strict=True)
    ]


def as_levels(images: torch.Tensor) -> np.ndarray:
    # As generation/work.py stores them: rounded to uint8 once.
    return images.mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy().astype(np.int16)


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    """Random-weight networks and a reference of demo drawings."""
    folder = tmp_path_factory.mktemp("optimized-reference")
    real, training = [], []
    for dx, fst in STRATA:
        for seed in range(3):
            path = folder / f"real-{dx}-{fst}-{seed}.png"
            draw_lesion(dx, fst, seed=100 + seed, size=64).save(path)
            real.append((str(path), fst))
    for seed in range(6):
        path = folder / f"train-{seed}.png"
        draw_lesion(*STRATA[seed % 4], seed=500 + seed, size=64).save(path)
        training.append((f"train-{seed}", str(path)))
    extractors = Extractors.load(device="cpu", clip_model=TINY_CLIP)
    reference = Reference.build(
        extractors, real=real, training=training, size=SIZE, lpips_images=3,
        memorization_neighbours=2,
    )  # fmt: skip
    return extractors, reference


def scorer_with(scoring, thresholds: dict) -> Scorer:
    config = ScoringConfig.build(
        {
            "lpips_reference_images": 3,
            "memorization_neighbours": 2,
            "apply_uncalibrated": list(CHECK_NAMES),
            **thresholds,
        }
    )
    return Scorer(*scoring, config, size=SIZE)


def midway(values: list[float]) -> float:
    """A threshold halfway between the two middle values: half the images pass, and none sits
    on the boundary."""
    ordered = sorted(values)
    return (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2


def test_the_optimized_path_fuses_the_lora_and_qkv_in_fp32_on_cpu(generators):
    eager, optimized = generators
    applied = optimized.optimizations
    assert applied["lora_fused_into"] == ["unet"]  # the LoRA run adapts the UNet only
    assert applied["dtype"] == "float32" and applied["compiled_unet"] is False
    assert applied["attention"] == ["FusedAttnProcessor2_0"]
    assert not getattr(optimized.pipe.unet, "peft_config", None)  # adapter layers removed
    assert optimized.environment()["optimized"] == applied
    # The default is the eager path, recorded as before.
    assert eager.optimizations is None and "optimized" not in eager.environment()
    assert eager.pipe.unet.peft_config
    assert compute_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("device_batch", [1, 4])
def test_the_optimized_pixels_match_the_eager_ones_within_one_level(generators, device_batch):
    eager, optimized = generators
    work = jobs(eager)
    pixels = {}
    for name, generator in (("eager", eager), ("optimized", optimized)):
        chunks = [work[i : i + device_batch] for i in range(0, len(work), device_batch)]
        pixels[name] = np.concatenate(
            [
                as_levels(
                    generator.generate(
                        [j[2] for j in chunk], [j[3] for j in chunk], steps=4, size=SIZE
                    )
                )
                for chunk in chunks
            ]
        )
    difference = np.abs(pixels["eager"] - pixels["optimized"])
    assert difference.max() <= 1, f"max difference {difference.max()} levels"
    # Not trivially equal images: the seeds give different pictures.
    assert np.abs(pixels["eager"][0] - pixels["eager"][1]).max() > 10


def test_the_optimized_images_get_the_same_filter_verdicts(generators, scoring):
    eager, optimized = generators
    work = jobs(eager)
    images = {}
    for name, generator in (("eager", eager), ("optimized", optimized)):
        generated = generator.generate(
            [j[2] for j in work], [j[3] for j in work], steps=4, size=SIZE
        )
        images[name] = torch.from_numpy(as_levels(generated)).float() / 255
    labels = {"diagnoses": [j[0] for j in work], "fsts": [j[1] for j in work]}
    # Thresholds halfway through the eager images' own values, so that the verdicts are mixed
    # and a rounding difference that mattered would flip one.
    measured = scorer_with(scoring, {}).score(images["eager"], **labels)
    thresholds = {
        "fid": midway([s.metrics["fid"] for s in measured]),
        "lpips_real": midway([s.metrics["lpips_real"] for s in measured]),
    }
    scorer = scorer_with(scoring, thresholds)
    # A verdict: which checks failed (the reasons' texts also quote the measured values).
    verdicts = {
        name: [
            (bool(s.reasons), tuple(c.name for c in s.checks if not c.passed))
            for s in scorer.score(batch, **labels)
        ]
        for name, batch in images.items()
    }
    assert verdicts["optimized"] == verdicts["eager"]
    rejected = [v[0] for v in verdicts["eager"]]
    assert any(rejected) and not all(rejected), verdicts["eager"]


def test_an_image_prompt_a_cpu_compile_or_an_unknown_mode_is_refused(generators):
    from fairskin.generation.sampler import ImagePrompt

    _, optimized = generators
    prompt = ImagePrompt(Path("unused"), 0.5, torch.zeros(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="image prompts run on the eager path"):
        optimized.generate(["a photo"], [1], steps=1, image_prompt=prompt)
    with pytest.raises(ValueError, match="only used on CUDA"):
        optimize_pipeline(optimized.pipe, compile_unet=True)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; choose one of default"):
        optimize_pipeline(optimized.pipe, compile_mode="fast")
