"""img2img from a reference image on the tiny model: the pipeline is built from the text-to-image
pipeline's own components, the strength sets how far an output moves from its reference, and a
candidate's pixels depend on its seed, not on its batch."""

import numpy as np
import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.generation.reference_images import check_strength
from fairskin.generation.sampler import BatchGenerator
from fairskin.imaging.demo import draw_lesion

torch.set_num_threads(1)
SIZE = 32
STEPS = 10


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    tiny = resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))
    return BatchGenerator(tiny, [], scheduler="ddim")


def reference(seed: int) -> torch.Tensor:
    pixels = np.array(draw_lesion("MEL", 6, seed=seed, size=64).convert("RGB").resize((SIZE, SIZE)))
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)


def distance(images: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Mean absolute pixel difference (0-1 scale) of each image from the reference."""
    return (images.cpu() - ref[None]).abs().mean(dim=(1, 2, 3)).tolist()


def test_strength_sets_the_distance_from_the_reference(gen):
    ref = reference(0)
    refs = ref[None].repeat(3, 1, 1, 1)
    seeds, prompts = [1, 2, 3], ["a photo of skin"] * 3
    by_strength = {
        s: float(
            np.mean(
                distance(
                    gen.generate(
                        prompts, seeds, steps=STEPS, size=SIZE, init_images=refs, strength=s
                    ),
                    ref,
                )
            )
        )
        for s in (0.1, 0.5, 1.0)
    }
    text = float(np.mean(distance(gen.generate(prompts, seeds, steps=STEPS, size=SIZE), ref)))
    print({"strength": by_strength, "text_to_image": text})
    assert by_strength[0.1] < by_strength[0.5] < by_strength[1.0]
    assert by_strength[0.1] < text
    # The pipeline shares the text-to-image pipeline's modules: nothing was loaded twice.
    assert gen._img2img.unet is gen.pipe.unet and gen._img2img.vae is gen.pipe.vae


def test_a_candidate_depends_on_its_seed_and_reference_not_on_its_batch(gen):
    refs = torch.stack([reference(0), reference(1), reference(0)])
    kwargs = {"steps": STEPS, "size": SIZE, "strength": 0.6}
    together = gen.generate(["skin"] * 3, [7, 8, 9], init_images=refs, **kwargs)
    again = gen.generate(["skin"] * 3, [7, 8, 9], init_images=refs, **kwargs)
    assert torch.equal(together, again)
    alone = gen.generate(["skin"], [9], init_images=refs[2:], **kwargs)
    assert torch.allclose(alone[0], together[2], atol=2e-3)
    other_seed = gen.generate(["skin"], [10], init_images=refs[2:], **kwargs)
    assert (other_seed[0] - together[2]).abs().max() > 0.05


def test_bad_strengths_and_references_are_refused(gen):
    assert check_strength(0.6, 50) is None
    assert "in (0, 1]" in check_strength(0, 50)
    assert "in (0, 1]" in check_strength(1.5, 50)
    assert "must be a number" in check_strength("0.5", 50)
    assert "runs no denoising step" in check_strength(0.05, 10)
    with pytest.raises(ValueError, match="runs no denoising step"):
        gen.generate(
            ["skin"], [1], steps=10, size=SIZE, init_images=reference(0)[None], strength=0.05
        )
    with pytest.raises(ValueError, match="shape"):
        gen.generate(
            ["skin"], [1], steps=10, size=SIZE, init_images=reference(0)[None, :, :16], strength=0.5
        )
