"""Externally trained embeddings and LoRAs convert into run directories plain diffusers loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from fairskin.diffusion.artifacts import EMBEDDINGS_DIR, LORA_FILE, load_run_artifacts
from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.external import ExternalArtifactError, import_external

torch.set_num_threads(1)

DIM = 32  # the tiny model's text encoder width


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> str:
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models")).path


@pytest.fixture
def sources(tmp_path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def dest(tmp_path) -> Path:
    return tmp_path / "runs" / "imported"


def vector(seed: int, shape: tuple[int, ...] = (DIM,)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def fresh_pipeline(base_path: str) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(base_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embedding_row(pipe: StableDiffusionPipeline, token: str) -> torch.Tensor:
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    return pipe.text_encoder.get_input_embeddings().weight[token_id]


def lora_unet(base_path: str, *, r: int = 16, alpha: int = 32) -> UNet2DConditionModel:
    """The tiny UNet with a LoRA whose weights are set from a fixed seed, as if trained."""
    unet = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet")
    unet.add_adapter(
        LoraConfig(
            r=r,
            lora_alpha=alpha,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    set_lora_weights(unet)
    return unet.eval()


def set_lora_weights(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def unet_output(unet: UNet2DConditionModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, DIM, generator=generator)
    with torch.no_grad():
        return unet(latents, torch.tensor([400]), context).sample


def to_kohya(unet: UNet2DConditionModel, alpha: float) -> dict[str, torch.Tensor]:
    """The adapter in kohya-ss / A1111 naming: lora_unet_<module path with '_'>.lora_down..."""
    kohya = {}
    for key, tensor in get_peft_model_state_dict(unet).items():
        module, _, kind = key.rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        if kind == "A.weight":
            kohya[f"{name}.lora_down.weight"] = tensor.clone()
            kohya[f"{name}.alpha"] = torch.tensor(float(alpha))
        else:
            kohya[f"{name}.lora_up.weight"] = tensor.clone()
    return kohya


def assert_imports_lora_of(
    unet: UNet2DConditionModel, result, dest: Path, base_path: str, alpha: float
) -> None:
    assert result.has_lora and result.tokens == []
    assert result.files == [dest / LORA_FILE]
    pipe = fresh_pipeline(base_path)
    pipe.load_lora_weights(dest)  # plain diffusers, no FairSkin code
    (config,) = pipe.unet.peft_config.values()
    assert config.lora_alpha == alpha
    assert torch.allclose(unet_output(pipe.unet), unet_output(unet), atol=1e-5)


# --- embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "shape"),
    [
        ("learned_embeds.safetensors", (DIM,)),
        ("learned_embeds.bin", (1, DIM)),  # what diffusers' textual_inversion.py writes
    ],
)
def test_diffusers_embedding_imports_and_loads(base_path, sources, dest, file_name, shape):
    source = sources / file_name
    state = {"<dx-bcc>": vector(1, shape)}
    if file_name.endswith(".safetensors"):
        save_file(state, str(source))
    else:
        torch.save(state, source)

    result = import_external(source, dest=dest, expected_dim=DIM, base_path=base_path)

    assert (result.layout, result.tokens, result.has_lora) == (
        "diffusers-embedding",
        ["<dx-bcc>"],
        False,
    )
    assert result.files == [dest / EMBEDDINGS_DIR / "dx-bcc.safetensors"]
    pipe = fresh_pipeline(base_path)
    pipe.load_textual_inversion([str(f) for f in result.files])
    assert torch.equal(embedding_row(pipe, "<dx-bcc>"), vector(1))


@pytest.mark.parametrize(
    ("payload", "token"),
    [
        (
            {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": vector(2, (1, DIM))},
                "name": "dermstyle",
                "step": 3000,
                "sd_checkpoint": "abc123",
            },
            "dermstyle",
        ),
        ({"string_to_param": {"*": torch.nn.Parameter(vector(2, (1, DIM)))}}, "a1111-style"),
    ],
)
def test_a1111_embedding_takes_its_name_or_the_file_stem(base_path, sources, dest, payload, token):
    source = sources / "a1111-style.pt"
    torch.save(payload, source)

    result = import_external(source, dest=dest, expected_dim=DIM)

    assert (result.layout, result.tokens) == ("a1111-embedding", [token])
    pipe = fresh_pipeline(base_path)
    assert load_run_artifacts(pipe, [dest]) == [token]
    assert torch.equal(embedding_row(pipe, token), vector(2))


def test_a_token_that_mentions_lora_is_still_an_embedding(sources, dest):
    source = write_pt(sources / "style.pt", {"<lora-style>": vector(1), "lora_te_x": vector(2)})
    result = import_external(source, dest=dest, expected_dim=DIM)
    assert (result.layout, result.tokens) == ("token-dictionary", ["<lora-style>", "lora_te_x"])


def test_a1111_safetensors_embedding_uses_emb_params(base_path, sources, dest):
    source = sources / "dark-skin.safetensors"
    save_file({"emb_params": vector(3, (1, DIM))}, str(source))

    result = import_external(source, dest=dest, expected_dim=DIM)

    assert (result.layout, result.tokens) == ("a1111-embedding", ["dark-skin"])
    pipe = fresh_pipeline(base_path)
    load_run_artifacts(pipe, [dest])
    assert torch.equal(embedding_row(pipe, "dark-skin"), vector(3))


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_merged_token_dictionary_is_split_one_token_per_file(base_path, sources, dest, suffix):
    tokens = {"<melanoma>": vector(4), "<fst-v>": vector(5, (1, DIM)), "<fst-vi>": vector(6)}
    source = sources / f"learned_embeds{suffix}"
    if suffix == ".bin":
        torch.save(tokens, source)
    else:
        save_file({k: v.contiguous() for k, v in tokens.items()}, str(source))
    pipe = fresh_pipeline(base_path)
    # Why the split is needed: plain diffusers cannot read several tokens from one file.
    with pytest.raises(ValueError, match="incorrect"):
        pipe.load_textual_inversion(str(source))

    result = import_external(source, dest=dest, expected_dim=DIM)

    assert result.layout == "token-dictionary"
    assert sorted(result.tokens) == sorted(tokens)  # safetensors stores keys sorted
    assert sorted(f.name for f in result.files) == [
        "fst-v.safetensors",
        "fst-vi.safetensors",
        "melanoma.safetensors",
    ]
    pipe.load_textual_inversion([str(f) for f in result.files])
    for seed, token in enumerate(tokens, start=4):
        assert torch.equal(embedding_row(pipe, token), vector(seed))


# --- LoRA ------------------------------------------------------------------------------------


def test_kohya_lora_imports_with_its_alpha(base_path, sources, dest):
    original = lora_unet(base_path, r=16, alpha=32)
    source = sources / "derm_lora.safetensors"
    save_file(to_kohya(original, alpha=32), str(source))

    result = import_external(source, dest=dest, expected_dim=DIM, base_path=base_path)

    assert result.layout == "kohya-lora"
    assert_imports_lora_of(original, result, dest, base_path, alpha=32)


def test_kohya_lora_in_a_pickle_imports_too(base_path, sources, dest):
    original = lora_unet(base_path, r=4, alpha=1)
    source = sources / "derm_lora.pt"
    torch.save(to_kohya(original, alpha=1), source)

    result = import_external(source, dest=dest, expected_dim=DIM, base_path=base_path)

    assert_imports_lora_of(original, result, dest, base_path, alpha=1)


def test_diffusers_lora_keeps_the_scale_recorded_in_its_metadata(base_path, sources, dest):
    original = lora_unet(base_path, r=16, alpha=32)
    # As diffusers' training scripts save it: the full LoraConfig as adapter metadata, here
    # with a field from a newer peft that this peft's LoraConfig does not accept.
    metadata = {**original.peft_config["default"].to_dict(), "field_from_newer_peft": 1}
    StableDiffusionPipeline.save_lora_weights(
        sources,
        unet_lora_layers=get_peft_model_state_dict(original),
        unet_lora_adapter_metadata=metadata,
    )

    result = import_external(sources / LORA_FILE, dest=dest, expected_dim=DIM, base_path=base_path)

    assert result.layout == "diffusers-lora"
    assert_imports_lora_of(original, result, dest, base_path, alpha=32)


def test_peft_adapter_uses_the_adapter_config_beside_it(base_path, sources, dest):
    unet = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet")
    model = get_peft_model(unet, LoraConfig(r=8, lora_alpha=4, target_modules=["to_q", "to_v"]))
    set_lora_weights(model)
    model.save_pretrained(sources)
    original = model.base_model.model.eval()

    result = import_external(
        sources / "adapter_model.safetensors", dest=dest, expected_dim=DIM, base_path=base_path
    )

    assert result.layout == "diffusers-lora"
    assert_imports_lora_of(original, result, dest, base_path, alpha=4)


# --- refusals --------------------------------------------------------------------------------


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def expect_refusal(source: Path, dest: Path, match: str, **kwargs) -> None:
    kwargs.setdefault("expected_dim", DIM)
    with pytest.raises(ExternalArtifactError, match=match):
        import_external(source, dest=dest, **kwargs)
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def write_pt(source: Path, payload) -> Path:
    torch.save(payload, source)
    return source


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"<a>": vector(1, (2, DIM))}, "multi-vector embedding \\(2 vectors\\)"),
        ({"string_to_param": {"*": vector(1, (3, DIM))}, "name": "x"}, "multi-vector"),
        ({"<a>": vector(1, (DIM + 1,))}, "33 dimensions; the base model's text encoder uses 32"),
        ({"<a>": torch.full((DIM,), float("nan"))}, "NaN or infinite"),
        ({"<a>": torch.zeros(DIM), "<b>": torch.tensor([float("inf")] * DIM)}, "NaN or infinite"),
        ({"<a>": [0.1] * DIM}, "'<a>' is a list, not a tensor"),
        ({"<a>": torch.arange(DIM)}, "not floating point"),
        ({"my token": torch.zeros(DIM)}, "'my token' cannot be stored"),
        ({"<a>": torch.zeros(DIM), "a": torch.ones(DIM)}, "both be stored"),
        ({"conv.weight": torch.zeros(4, 4, 3, 3)}, "unknown layout"),
        ({"fc.weight": torch.zeros(10, DIM), "fc.bias": torch.zeros(10)}, "unknown layout"),
        ({"string_to_param": {"*": torch.zeros(1, DIM), "x": torch.zeros(1, DIM)}}, "one '\\*'"),
        ({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, "SDXL"),
        ({}, "empty"),
        (torch.zeros(DIM), "bare tensor"),
        ([torch.zeros(DIM)], "holds a list"),
    ],
)
def test_bad_embedding_files_are_refused_and_nothing_is_written(sources, dest, payload, match):
    expect_refusal(write_pt(sources / "bad.pt", payload), dest, match)


def test_a_pickle_that_would_run_code_is_refused_without_running_it(sources, dest, tmp_path):
    marker = tmp_path / "code-ran"
    source = write_pt(sources / "evil.pt", {"<a>": RunsCodeWhenUnpickled(marker)})
    expect_refusal(source, dest, "\\(posix.mkdir\\).* refused rather than unpickled")
    assert not marker.exists()


def test_unreadable_or_unsupported_files_are_refused(sources, dest):
    (sources / "model.ckpt").write_bytes(b"whatever")
    expect_refusal(sources / "model.ckpt", dest, "unsupported file type .ckpt")
    (sources / "broken.safetensors").write_bytes(os.urandom(64))
    expect_refusal(sources / "broken.safetensors", dest, "not a readable safetensors file")
    (sources / "broken.bin").write_bytes(b"not a zip or a pickle")
    expect_refusal(sources / "broken.bin", dest, "not a readable PyTorch file")
    expect_refusal(sources / "missing.bin", dest, "is not a file")


def test_a_token_the_base_vocabulary_already_has_is_refused(base_path, sources, dest):
    source = write_pt(sources / "cat.pt", {"cat": vector(1)})
    expect_refusal(
        source, dest, "'cat' already in the base model's vocabulary", base_path=base_path
    )


def test_a_lora_needs_the_base_model(sources, dest, base_path):
    source = sources / "lora.safetensors"
    save_file(to_kohya(lora_unet(base_path), alpha=32), str(source))
    expect_refusal(source, dest, "needs the base model")


def test_a_lora_that_also_adapts_the_text_encoder_is_refused(base_path, sources, dest):
    weights = to_kohya(lora_unet(base_path), alpha=32)
    weights["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(
        16, DIM
    )
    weights["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.zeros(
        DIM, 16
    )
    source = sources / "lora.safetensors"
    save_file(weights, str(source))
    expect_refusal(source, dest, "also adapts the text encoder", base_path=base_path)


def test_a_lora_for_another_model_is_refused(base_path, sources, dest):
    weights = to_kohya(lora_unet(base_path), alpha=32)
    name = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
    weights[f"{name}.lora_down.weight"] = torch.zeros(16, 32)
    weights[f"{name}.lora_up.weight"] = torch.zeros(32, 16)
    source = sources / "lora.safetensors"
    save_file(weights, str(source))
    expect_refusal(source, dest, "only 64 of its 66 LoRA weights match", base_path=base_path)


def test_a_lora_of_the_wrong_width_is_refused(base_path, sources, dest):
    weights = {}
    for key, tensor in to_kohya(lora_unet(base_path), alpha=32).items():
        # As if trained on SD v1.5, whose cross-attention reads 768-wide text features.
        wide = key.endswith("attn2_to_k.lora_down.weight")
        weights[key] = torch.zeros(tensor.shape[0], 768) if wide else tensor
    source = sources / "lora.safetensors"
    save_file(weights, str(source))
    expect_refusal(source, dest, "does not fit the base model's UNet", base_path=base_path)


def test_a_lora_with_nan_weights_is_refused(base_path, sources, dest):
    weights = to_kohya(lora_unet(base_path), alpha=32)
    next(v for k, v in weights.items() if k.endswith("lora_up.weight"))[0, 0] = float("nan")
    source = sources / "lora.safetensors"
    save_file(weights, str(source))
    expect_refusal(source, dest, "NaN or infinite", base_path=base_path)


def test_a_peft_adapter_config_for_another_method_is_refused(base_path, sources, dest):
    weights = {
        f"base_model.model.{k}": v
        for k, v in get_peft_model_state_dict(lora_unet(base_path)).items()
    }
    save_file(weights, str(sources / "adapter_model.safetensors"))
    (sources / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    expect_refusal(
        sources / "adapter_model.safetensors", dest, "not describe a LoRA", base_path=base_path
    )


def test_an_existing_run_folder_is_never_overwritten(sources, dest):
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("earlier run")
    source = write_pt(sources / "ok.pt", {"<a>": vector(1)})
    with pytest.raises(ExternalArtifactError, match="not an empty folder"):
        import_external(source, dest=dest, expected_dim=DIM)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_an_empty_destination_folder_is_filled(sources, dest):
    dest.mkdir(parents=True)
    source = write_pt(sources / "ok.pt", {"<a>": vector(1)})
    result = import_external(source, dest=dest, expected_dim=DIM)
    assert result.files == [dest / EMBEDDINGS_DIR / "a.safetensors"]
    assert [p.name for p in dest.parent.iterdir()] == ["imported"]
