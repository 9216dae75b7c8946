import json
from pathlib import Path

import open_clip
import pytest
import torch

from fairskin.diffusion.base_models import (
    BaseModelError,
    materialize,
    resolve_base_model,
)
from fairskin.diffusion.tokenizer import write_clip_tokenizer

torch.set_num_threads(1)

SENTENCES = [
    "A dermoscopic image of melanoma on Fitzpatrick skin type VI, high quality medical photograph",
    "blurry, low quality, text, watermark, duplicated",
    "naïve café — 東京 seborrheic-keratosis 1234 !!",
    "   BASAL   cell\tcarcinoma\n",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("text", SENTENCES)
def test_tokenizer_gives_open_clips_ids(tmp_path, text):
    from transformers import CLIPTokenizer

    ours = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path))
    reference = open_clip.tokenizer.SimpleTokenizer()
    ids = ours(text).input_ids
    assert ids[0] == 49_406 and ids[-1] == 49_407  # start and end of text
    assert ids[1:-1] == reference.encode(text)


def test_tiny_is_a_plain_diffusers_folder_that_generates(tiny):
    from diffusers import StableDiffusionPipeline

    index = json.loads(Path(tiny.path, "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    pipe = StableDiffusionPipeline.from_pretrained(tiny.path)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a mole", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3)
    reference = open_clip.tokenizer.SimpleTokenizer()
    assert pipe.tokenizer("a mole").input_ids[1:-1] == reference.encode("a mole")
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.scheduler.config.num_train_timesteps == 1000


def test_materialize_is_idempotent(tiny, tmp_path):
    folder = materialize("tiny", cache_dir=tmp_path)
    stamp = (folder / "unet" / "config.json").stat().st_mtime_ns
    assert materialize("tiny", cache_dir=tmp_path) == folder
    assert (folder / "unet" / "config.json").stat().st_mtime_ns == stamp


def test_sd15_random_has_the_exact_sd15_shape():
    """Parameter counts of the shapes in the shared configs, built without allocating."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from fairskin.diffusion.base_models import _sd15_config, _strip

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_strip(_sd15_config("unet")))
        vae = AutoencoderKL(**_strip(_sd15_config("vae")))
        text_config = _strip(_sd15_config("text_encoder"))
        text_config.pop("architectures")
        text = CLIPTextModel(CLIPTextConfig(**text_config))

    def millions(module):
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)

    assert (millions(unet), millions(vae), millions(text)) == (859.5, 83.7, 123.1)


def test_bad_base_model_specs_are_refused(tmp_path):
    with pytest.raises(BaseModelError, match="not found"):
        resolve_base_model("no-such-model", cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match="model_index.json"):
        resolve_base_model(str(tmp_path), cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match="no base model"):
        resolve_base_model("  ", cache_dir=tmp_path)
    assert resolve_base_model("runwayml/stable-diffusion-v1-5", cache_dir=tmp_path).source == "hub"
