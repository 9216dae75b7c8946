"""Run artifacts load into a plain diffusers pipeline with no FairSkin code, and do something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from fairskin.diffusion.artifacts import (
    EMBEDDINGS_DIR,
    LORA_FILE,
    load_run_artifacts,
    load_token_embeddings,
    save_lora,
    save_token_embeddings,
    token_file_name,
)
from fairskin.diffusion.base_models import resolve_base_model

torch.set_num_threads(1)

DIM = 32  # the tiny model's text encoder width
PROMPT = "a dermoscopy photo of <dx-mel> on skin"


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> str:
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models")).path


def fresh_pipeline(base_path: str) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(base_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: StableDiffusionPipeline, prompt: str = PROMPT) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return pipe(prompt, num_inference_steps=2, generator=generator, output_type="np").images


def random_vector(seed: int) -> torch.Tensor:
    # Large on purpose: the tiny encoder's own rows are ~N(0, 0.02), so this clearly differs.
    return torch.randn(DIM, generator=torch.Generator().manual_seed(seed))


def trained_lora_unet(base_path: str, *, r: int = 16, alpha: int = 32) -> UNet2DConditionModel:
    """The tiny UNet with the engine's LoRA, its weights set (from a fixed seed) as if trained.

    Both matrices are set: peft initialises A from the global RNG and B to zero.
    """
    unet = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet")
    unet.add_adapter(
        LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=0.1,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return unet.eval()


def unet_output(unet: UNet2DConditionModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, DIM, generator=generator)
    with torch.no_grad():
        return unet(latents, torch.tensor([400]), context).sample


@pytest.mark.parametrize(
    ("token", "name"),
    [
        ("<dx-mel>", "dx-mel.safetensors"),
        ("<fst_VI>", "fst_VI.safetensors"),
        ("plain-token", "plain-token.safetensors"),
    ],
)
def test_token_file_name_strips_the_angle_brackets(token, name):
    assert token_file_name(token) == name


@pytest.mark.parametrize(
    "token",
    [
        "",
        "<>",
        "<../evil>",
        "<a/b>",
        "<dx mel>",
        "<dx-mel",
        "dx-mel>",
        "<<x>>",
        "<é>",
        "a.b",
    ],
)
def test_token_file_name_refuses_names_unsafe_as_files(token):
    with pytest.raises(ValueError, match="cannot be stored"):
        token_file_name(token)


def test_embeddings_are_one_float32_vector_per_file_and_load_back(tmp_path):
    half = random_vector(1).half()
    files = save_token_embeddings(tmp_path, {"<dx-mel>": half, "<fst-vi>": random_vector(2)[None]})

    assert files == [
        tmp_path / EMBEDDINGS_DIR / "dx-mel.safetensors",
        tmp_path / EMBEDDINGS_DIR / "fst-vi.safetensors",
    ]
    state = load_file(str(files[1]))
    assert list(state) == ["<fst-vi>"]
    assert state["<fst-vi>"].shape == (DIM,) and state["<fst-vi>"].dtype == torch.float32
    loaded = load_token_embeddings(tmp_path)
    assert set(loaded) == {"<dx-mel>", "<fst-vi>"}
    assert torch.equal(loaded["<dx-mel>"], half.float())
    assert torch.equal(loaded["<fst-vi>"], random_vector(2))


def test_saving_again_replaces_the_whole_set_of_tokens(tmp_path):
    save_token_embeddings(tmp_path, {"<dx-mel>": random_vector(1), "<dx-nv>": random_vector(2)})
    save_token_embeddings(tmp_path, {"<dx-mel>": random_vector(3)})

    loaded = load_token_embeddings(tmp_path)
    assert list(loaded) == ["<dx-mel>"]
    assert torch.equal(loaded["<dx-mel>"], random_vector(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDINGS_DIR]


def test_a_view_of_the_embedding_table_is_saved_as_just_its_row(tmp_path):
    table = torch.randn(1000, DIM)
    (path,) = save_token_embeddings(tmp_path, {"<dx-mel>": table[5]})
    assert path.stat().st_size < 4 * DIM + 512


@pytest.mark.parametrize(
    ("embeddings", "problem"),
    [
        ({}, "no token embeddings"),
        ({"<a>": torch.zeros(2, DIM)}, "shape"),
        ({"<a>": torch.zeros(1, 1, DIM)}, "shape"),
        ({"<a>": torch.tensor([1.0, float("nan")])}, "NaN"),
        ({"<a>": torch.arange(DIM)}, "floating point"),
        ({"<a>": torch.zeros(DIM), "<b>": torch.zeros(DIM + 1)}, "different sizes"),
        ({"<a>": torch.zeros(DIM), "a": torch.ones(DIM)}, "both be stored"),
        ({"<A>": torch.zeros(DIM), "<a>": torch.ones(DIM)}, "both be stored"),
        ({"<a b>": torch.zeros(DIM)}, "cannot be stored"),
    ],
)
def test_bad_embeddings_are_refused_and_nothing_is_written(tmp_path, embeddings, problem):
    with pytest.raises(ValueError, match=problem):
        save_token_embeddings(tmp_path, embeddings)
    assert list(tmp_path.iterdir()) == []


def test_saved_embedding_loads_into_plain_diffusers_and_changes_the_image(base_path, tmp_path):
    vector = random_vector(4)
    files = save_token_embeddings(tmp_path, {"<dx-mel>": vector})
    pipe = fresh_pipeline(base_path)
    before = render(pipe)

    pipe.load_textual_inversion([str(f) for f in files])

    token_id = pipe.tokenizer.convert_tokens_to_ids("<dx-mel>")
    ids = pipe.tokenizer(PROMPT).input_ids
    assert ids.count(token_id) == 1  # one token, not split into BPE pieces
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[token_id], vector)
    after = render(pipe)
    assert np.abs(after - before).max() > 1e-3
    # The token is what changed the image: the same prompt without it renders as before.
    assert np.array_equal(
        render(pipe, "a dermoscopy photo of on skin"),
        render(fresh_pipeline(base_path), "a dermoscopy photo of on skin"),
    )


def test_saved_lora_restores_rank_alpha_and_outputs_in_plain_diffusers(base_path, tmp_path):
    trained = trained_lora_unet(base_path)
    path = save_lora(tmp_path, trained)
    assert path == tmp_path / LORA_FILE and LORA_FILE == LORA_WEIGHT_NAME_SAFE
    assert [p.name for p in tmp_path.iterdir()] == [LORA_FILE]

    pipe = fresh_pipeline(base_path)
    untouched = unet_output(pipe.unet)
    pipe.load_lora_weights(tmp_path)

    (config,) = pipe.unet.peft_config.values()
    assert (config.r, config.lora_alpha) == (16, 32)
    expected = unet_output(trained)
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)
    assert (expected - untouched).abs().max() > 1e-2


def test_without_the_metadata_diffusers_would_apply_the_lora_at_the_wrong_scale(
    base_path, tmp_path
):
    trained = trained_lora_unet(base_path)
    save_lora(tmp_path, trained)
    bare = tmp_path / "bare"
    bare.mkdir()
    save_file(load_file(str(tmp_path / LORA_FILE)), str(bare / LORA_FILE))

    pipe = fresh_pipeline(base_path)
    pipe.load_lora_weights(bare)

    (config,) = pipe.unet.peft_config.values()
    assert config.lora_alpha == 16  # diffusers' guess, alpha = r: scale 1 instead of 2
    assert not torch.allclose(unet_output(pipe.unet), unet_output(trained), atol=1e-3)


def test_saved_lora_changes_the_generated_image(base_path, tmp_path):
    save_lora(tmp_path, trained_lora_unet(base_path))
    pipe = fresh_pipeline(base_path)
    before = render(pipe)
    pipe.load_lora_weights(tmp_path)
    assert np.abs(render(pipe) - before).max() > 1e-3


def test_save_lora_refuses_a_missing_adapter_or_diverged_weights(base_path, tmp_path):
    plain = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet")
    with pytest.raises(ValueError, match="no LoRA adapter named 'default'"):
        save_lora(tmp_path, plain)
    diverged = trained_lora_unet(base_path)
    with torch.no_grad():
        next(p for n, p in diverged.named_parameters() if "lora_A" in n)[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_lora(tmp_path, diverged)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def runs(base_path, tmp_path_factory) -> dict[str, Path]:
    """A textual-inversion run and a LoRA run built on it, as the engine writes them."""
    root = tmp_path_factory.mktemp("runs")
    tokens, lora = root / "ti", root / "lora"
    save_token_embeddings(tokens, {"<dx-mel>": random_vector(5), "<fst-vi>": random_vector(6)})
    lora.mkdir()
    save_lora(lora, trained_lora_unet(base_path))
    return {"tokens": tokens, "lora": lora}


def test_load_run_artifacts_loads_tokens_and_the_lora(base_path, runs):
    pipe = fresh_pipeline(base_path)
    before = render(pipe)

    tokens = load_run_artifacts(pipe, [runs["tokens"], runs["lora"]])

    assert tokens == ["<dx-mel>", "<fst-vi>"]
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[pipe.tokenizer.convert_tokens_to_ids("<fst-vi>")], random_vector(6))
    assert torch.allclose(
        unet_output(pipe.unet), unet_output(trained_lora_unet(base_path)), atol=1e-5
    )
    assert np.abs(render(pipe) - before).max() > 1e-3


def test_loading_the_same_runs_again_changes_nothing(base_path, runs):
    pipe = fresh_pipeline(base_path)
    load_run_artifacts(pipe, [runs["tokens"], runs["lora"]])
    first = render(pipe)
    size = len(pipe.tokenizer)

    assert load_run_artifacts(pipe, [runs["tokens"], runs["lora"]]) == ["<dx-mel>", "<fst-vi>"]

    assert len(pipe.tokenizer) == size
    assert len(pipe.unet.peft_config) == 1
    assert np.array_equal(render(pipe), first)


def test_a_token_already_loaded_with_another_embedding_is_refused(base_path, runs, tmp_path):
    save_token_embeddings(tmp_path, {"<dx-mel>": random_vector(99)})
    pipe = fresh_pipeline(base_path)
    load_run_artifacts(pipe, [tmp_path])
    size = len(pipe.tokenizer)

    with pytest.raises(ValueError, match="already in the pipeline's tokenizer"):
        load_run_artifacts(pipe, [runs["tokens"], runs["lora"]])

    assert len(pipe.tokenizer) == size  # <fst-vi> was not loaded either
    assert not getattr(pipe.unet, "peft_config", None)


def test_two_runs_defining_a_token_differently_are_refused(base_path, runs, tmp_path):
    save_token_embeddings(tmp_path, {"<fst-vi>": random_vector(100)})
    pipe = fresh_pipeline(base_path)
    with pytest.raises(ValueError, match="different embeddings"):
        load_run_artifacts(pipe, [runs["tokens"], tmp_path])
    assert "<dx-mel>" not in pipe.tokenizer.get_vocab()


def test_the_lora_of_the_last_run_that_has_one_is_the_active_one(base_path, runs, tmp_path):
    other = trained_lora_unet(base_path, r=4, alpha=4)
    save_lora(tmp_path, other)
    pipe = fresh_pipeline(base_path)

    load_run_artifacts(pipe, [runs["lora"]])
    load_run_artifacts(pipe, [runs["lora"], runs["tokens"], tmp_path])
    assert torch.allclose(unet_output(pipe.unet), unet_output(other), atol=1e-5)

    # Back to the first run: its adapter is still loaded, so it is reactivated, not stacked.
    load_run_artifacts(pipe, [runs["lora"]])
    assert len(pipe.unet.peft_config) == 2
    assert torch.allclose(
        unet_output(pipe.unet), unet_output(trained_lora_unet(base_path)), atol=1e-5
    )


def test_a_missing_run_directory_is_an_error(base_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_run_artifacts(fresh_pipeline(base_path), [tmp_path / "nope"])
