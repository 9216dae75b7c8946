"""Generation from a reference image through an image-prompt adapter in the batch sampler, on
the tiny model with a public-layout adapter written key by key (no FairSkin saver)."""

import numpy as np
import pytest
import torch

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.image_prompt import ImagePromptError, attached
from fairskin.generation.sampler import BatchGenerator, ImagePrompt
from fairskin.imaging.demo import draw_lesion
from tests.fairskin.diffusion.test_image_prompt import hand_written_adapter

torch.set_num_threads(1)
SIZE, STEPS = 32, 6
KW = {"steps": STEPS, "size": SIZE, "guidance": 5.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tiny = resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))
    folder = tmp_path_factory.mktemp("adapter")
    hand_written_adapter(folder, tiny)
    return BatchGenerator(tiny, [], scheduler="ddim"), folder


def drawn(seed: int, fst: int = 6) -> torch.Tensor:
    pixels = np.array(draw_lesion("MEL", fst, seed=seed, size=64).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)


def test_the_reference_conditions_every_image_of_the_call(setup):
    gen, folder = setup
    plain = gen.generate(["skin"] * 2, [1, 2], **KW)
    first = gen.generate(
        ["skin"] * 2, [1, 2], image_prompt=ImagePrompt(folder, 1.0, drawn(0)), **KW
    )
    assert attached(gen.pipe.unet) is not None  # loaded on first use
    again = gen.generate(
        ["skin"] * 2, [1, 2], image_prompt=ImagePrompt(folder, 1.0, drawn(0)), **KW
    )
    other = gen.generate(
        ["skin"] * 2, [1, 2], image_prompt=ImagePrompt(folder, 1.0, drawn(5, fst=1)), **KW
    )
    assert torch.equal(first, again)
    assert (first - plain).abs().mean() > 0.01  # the reference changes the images
    assert (first - other).abs().mean() > 0.005  # and another reference changes them again
    # Scale 0: the adapter adds nothing, the plain pipeline's pixels.
    zero = gen.generate(["skin"] * 2, [1, 2], image_prompt=ImagePrompt(folder, 0.0, drawn(0)), **KW)
    assert torch.allclose(zero, plain, atol=1e-5)
    # With the adapter loaded, a call without a reference is still the plain pipeline.
    assert torch.allclose(gen.generate(["skin"] * 2, [1, 2], **KW), plain, atol=1e-6)
    # A candidate depends on its seed and reference, not on its batch.
    alone = gen.generate(["skin"], [2], image_prompt=ImagePrompt(folder, 1.0, drawn(0)), **KW)
    assert torch.allclose(alone[0], first[1], atol=2e-3)


def test_an_image_prompt_is_refused_with_other_conditioning_or_a_bad_adapter(setup, tmp_path):
    gen, folder = setup
    prompt = ImagePrompt(folder, 1.0, drawn(0))
    with pytest.raises(ValueError, match="takes no img2img references or label guidance"):
        gen.generate(["skin"], [1], image_prompt=prompt, label_scale=1.0, **KW)
    with pytest.raises(ValueError, match="takes no img2img"):
        gen.generate(
            ["skin"], [1], image_prompt=prompt, init_images=drawn(0)[None], strength=0.5, **KW
        )
    (tmp_path / "ip_adapter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ImagePromptError, match="not a readable safetensors file"):
        gen.generate(["skin"], [1], image_prompt=ImagePrompt(tmp_path, 1.0, drawn(0)), **KW)
