"""Batched generation on the tiny model, and the per-candidate checks."""

import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.config import TrainConfig
from fairskin.diffusion.tokens import prompt_for
from fairskin.diffusion.training import TrainItem, train
from fairskin.generation.checks import (
    Threshold,
    brightness_check,
    failed_reasons,
    resolution_check,
    threshold_check,
)
from fairskin.generation.sampler import SCHEDULERS, BatchGenerator
from fairskin.imaging.demo import draw_lesion
from fairskin.progress import SilentProgress

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def ti_dir(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    items = []
    for i, (dx, fst) in enumerate([("MEL", 2), ("DF", 5)]):
        path = folder / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), dx, fst))
    run_dir = tmp_path_factory.mktemp("ti")
    train(
        config=TrainConfig.build(
            "textual_inversion",
            {
                "steps": 2,
                "validation_every": 99,
                "validation_inference_steps": 1,
                "grad_accumulation": 1,
                "lr_warmup_steps": 0,
            },
        ),
        base=tiny,
        items=items,
        run_dir=run_dir,
        progress=SilentProgress(),
    )
    return run_dir


def test_an_image_depends_on_its_seed_not_on_its_batch(tiny, ti_dir):
    gen = BatchGenerator(tiny, [ti_dir], scheduler="ddim")
    prompts = [prompt_for("DF", 6, available=gen.tokens)] * 3
    together = gen.generate(prompts, [11, 12, 13], steps=3)
    alone = torch.cat(
        [gen.generate(prompts[:1], [11], steps=3), gen.generate(prompts[1:], [12, 13], steps=3)]
    )
    assert together.shape == (3, 3, 32, 32)
    assert 0 <= together.min() and together.max() <= 1
    assert torch.allclose(together, alone, atol=1e-4)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # seeds differ


def test_learned_tokens_are_loaded_once_and_change_the_images(tiny, ti_dir):
    with_tokens = BatchGenerator(tiny, [ti_dir])
    plain = BatchGenerator(tiny, [])
    assert "<dx-df>" in with_tokens.tokens and plain.tokens == []
    prompt = [prompt_for("DF", 5, available=with_tokens.tokens)]
    a = with_tokens.generate(prompt, [3], steps=2)
    b = plain.generate(prompt, [3], steps=2)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_generates(tiny, scheduler):
    images = BatchGenerator(tiny, [], scheduler=scheduler).generate(["a mole"], [1], steps=2)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_unknown_scheduler_and_mismatched_seeds_are_refused(tiny):
    with pytest.raises(ValueError, match="unknown scheduler"):
        BatchGenerator(tiny, [], scheduler="euler-magic")
    with pytest.raises(ValueError, match="one seed per prompt"):
        BatchGenerator(tiny, []).generate(["a", "b"], [1])


def test_brightness_rejects_black_and_white_images_with_the_reason():
    images = torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5), torch.ones(3, 8, 8)])
    results = brightness_check(images)
    assert [r.passed for r in results] == [False, True, False]
    assert results[0].reason == "brightness 0.000 outside [0.1, 0.9]"
    assert failed_reasons(results[:1]) == ("brightness 0.000 outside [0.1, 0.9]",)


def test_resolution_check_names_the_size():
    results = resolution_check(torch.zeros(2, 3, 16, 32), expected=32)
    assert not results[0].passed and "32x16" in results[0].reason


def test_relative_thresholds_follow_the_real_vs_real_distribution():
    reference = list(range(1, 101))  # real-vs-real values 1..100
    assert Threshold(0.2, mode="relative", percentile=95).resolve(reference) == pytest.approx(95.05)
    results = threshold_check(
        "lpips",
        [50.0, 99.0],
        Threshold(0, "relative"),
        higher_is_worse=True,
        calibrated=True,
        reference=reference,
    )
    assert [r.passed for r in results] == [True, False]
    with pytest.raises(ValueError, match="relative threshold needs the real images' values"):
        Threshold(0.2, mode="relative").resolve([])


def test_uncalibrated_checks_are_recorded_but_never_reject_by_default():
    results = threshold_check(
        "fid-distance", [50.0], Threshold(30.0), higher_is_worse=True, calibrated=False
    )
    assert not results[0].passed and not results[0].rejects
    assert results[0].reason.endswith("(uncalibrated)")
    enabled = threshold_check(
        "fid-distance",
        [50.0],
        Threshold(30.0),
        higher_is_worse=True,
        calibrated=False,
        enabled=True,
    )
    assert enabled[0].rejects
