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
    image = pipe(
        "a mole",
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images[0]
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


# The shape of a base model, read from its config files without loading weights.


def test_tiny_reports_its_shape_from_its_config_files(tiny):
    assert tiny.native_size() == 32  # the size its pipeline generates at (test above)
    assert tiny.text_encoder_width() == 32
    assert tiny.prediction_type() == "epsilon"


def test_built_in_models_report_their_shape_before_they_are_built(tmp_path):
    tiny = resolve_base_model("tiny", cache_dir=tmp_path, build=False)
    sd15 = resolve_base_model("sd15-random", cache_dir=tmp_path, build=False)
    assert not Path(tiny.path).exists() and not Path(sd15.path).exists()
    assert (tiny.native_size(), tiny.text_encoder_width(), tiny.prediction_type()) == (
        32,
        32,
        "epsilon",
    )
    assert (sd15.native_size(), sd15.text_encoder_width(), sd15.prediction_type()) == (
        512,
        768,
        "epsilon",
    )


def _config_only_copy(tiny, folder: Path) -> Path:
    """A diffusers folder holding only the tiny model's config files (no weights)."""
    from fairskin.diffusion.base_models import CONFIG_FILES

    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(Path(tiny.path, "model_index.json").read_text())
    for relative in CONFIG_FILES.values():
        (folder / relative).parent.mkdir()
        (folder / relative).write_text(Path(tiny.path, relative).read_text())
    return folder


def _edit(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_a_local_folder_is_read_from_its_own_config_files(tiny, tmp_path):
    folder = _config_only_copy(tiny, tmp_path / "model")
    _edit(folder / "unet" / "config.json", sample_size=96)
    _edit(folder / "text_encoder" / "config.json", hidden_size=1024)
    _edit(folder / "scheduler" / "scheduler_config.json", prediction_type="v_prediction")
    base = resolve_base_model(str(folder), cache_dir=tmp_path)
    assert base.source == "local"
    assert base.native_size() == 96 * 2  # the tiny VAE has two blocks: one halving
    assert base.text_encoder_width() == 1024
    assert base.prediction_type() == "v_prediction"
    _edit(folder / "scheduler" / "scheduler_config.json", prediction_type=None)
    assert base.prediction_type() == "epsilon"  # diffusers' default when the key is absent


@pytest.mark.parametrize(
    ("damage", "method", "message"),
    [
        (
            lambda f: (f / "vae" / "config.json").unlink(),
            "native_size",
            r"cannot read .*vae/config\.json",
        ),
        (
            lambda f: (f / "unet" / "config.json").write_text("{not json"),
            "native_size",
            r"unet/config\.json is not valid JSON",
        ),
        (
            lambda f: _edit(f / "unet" / "config.json", sample_size=None),
            "native_size",
            r"unet/config\.json has no 'sample_size'",
        ),
        (
            lambda f: _edit(f / "vae" / "config.json", block_out_channels=[]),
            "native_size",
            "not what a Stable Diffusion model has",
        ),
        (
            lambda f: (f / "text_encoder" / "config.json").write_text("[768]"),
            "text_encoder_width",
            "is not a JSON object",
        ),
        (
            lambda f: _edit(f / "text_encoder" / "config.json", hidden_size=None),
            "text_encoder_width",
            r"text_encoder/config\.json has no 'hidden_size'",
        ),
        (
            lambda f: _edit(f / "text_encoder" / "config.json", hidden_size="wide"),
            "text_encoder_width",
            "not a whole number",
        ),
        (
            lambda f: (f / "scheduler" / "scheduler_config.json").unlink(),
            "prediction_type",
            r"cannot read .*scheduler_config\.json",
        ),
    ],
)
def test_a_folder_with_a_missing_or_corrupt_config_is_refused_naming_the_file(
    tiny, tmp_path, damage, method, message
):
    folder = _config_only_copy(tiny, tmp_path / "model")
    damage(folder)
    base = resolve_base_model(str(folder), cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match=message):
        getattr(base, method)()


def test_a_hub_model_is_read_from_the_local_cache_else_as_sd15(tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    base = resolve_base_model("someone/skin-model", cache_dir=tmp_path)
    assert base.source == "hub"
    assert (base.native_size(), base.text_encoder_width(), base.prediction_type()) == (
        512,
        768,
        "epsilon",
    )  # not cached: SD v1.5's configs

    repo = tmp_path / "hub" / "models--someone--skin-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    _config_only_copy(tiny, repo / "snapshots" / ("0" * 40))
    assert (base.native_size(), base.text_encoder_width(), base.prediction_type()) == (
        32,
        32,
        "epsilon",
    )


def test_training_refuses_a_model_that_predicts_neither_noise_nor_v(tiny, tmp_path):
    from fairskin.diffusion.config import TrainConfig
    from fairskin.diffusion.training_setup import load_components

    folder = _config_only_copy(tiny, tmp_path / "model")
    _edit(folder / "scheduler" / "scheduler_config.json", prediction_type="sample")
    base = resolve_base_model(str(folder), cache_dir=tmp_path)
    with pytest.raises(BaseModelError, match=r"base model .+ predicts 'sample'"):
        load_components(base, TrainConfig.build("textual_inversion", {}), torch.device("cpu"))
