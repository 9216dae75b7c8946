"""The image-prompt adapter on the tiny model: zero at the start, in the public IP-Adapter
layout that plain diffusers' ``load_ip_adapter`` loads, trained by a LoRA run, saved with its
image encoder, resumed exactly after a kill, and refused where it cannot work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from fairskin.diffusion import image_prompt
from fairskin.diffusion.base_models import BaseModel, NoImageEncoder, resolve_base_model
from fairskin.diffusion.checkpoints import latest_checkpoint
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.image_prompt import (
    FILENAME,
    ImagePromptError,
    adapter_state,
    attach,
    save_adapter,
)
from fairskin.diffusion.image_prompt_loader import load_image_prompt
from fairskin.diffusion.training import train
from fairskin.progress import SilentProgress
from tests.fairskin.diffusion.drawn import drawn_items

torch.set_num_threads(1)
CELLS = [("MEL", 1), ("MEL", 6), ("NV", 2), ("NV", 5)]
FAST = {
    "validation_every": 10_000,
    "validation_inference_steps": 1,
    "lr_warmup_steps": 0,
    "grad_accumulation": 1,
    "batch_size": 2,
    "diversity_weight": 0.0,
}
# The tiny UNet's cross-attention layers in diffusers' processor order, and their widths.
TINY_LAYERS = {1: 32, 3: 32, 5: 32, 7: 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return drawn_items(tmp_path_factory.mktemp("images"), CELLS)


@pytest.fixture(scope="module")
def reference(items):
    return Image.open(items[1].path).convert("RGB")


def plain_pipe(tiny):
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny.path, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, **extra):
    return pipe(
        "a photo",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        **extra,
    ).images


def hand_written_adapter(folder, tiny, seed=0):
    """A nonzero adapter written key by key in the public layout, with no FairSkin code."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "image_proj.proj.weight": torch.randn(4 * 32, 32, generator=g),
        "image_proj.proj.bias": torch.randn(4 * 32, generator=g),
        "image_proj.norm.weight": 1 + 0.1 * torch.randn(32, generator=g),
        "image_proj.norm.bias": 0.1 * torch.randn(32, generator=g),
    }
    for key_id, hidden in TINY_LAYERS.items():
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, 32, generator=g)
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, 32, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "ip_adapter.safetensors"))
    shutil.copytree(f"{tiny.path}/image_encoder", folder / "image_encoder", dirs_exist_ok=True)
    return state


def test_settings_are_off_by_default_and_validated():
    config = TrainConfig.build("lora")
    assert (config.image_prompt, config.image_prompt_dropout, config.image_prompt_tokens) == (
        False,
        0.1,
        4,
    )
    with pytest.raises(ConfigError, match="image_prompt needs a LoRA or joint run"):
        TrainConfig.build("textual_inversion", {"image_prompt": True})
    with pytest.raises(ConfigError, match=r"image_prompt_dropout must be in \[0, 1\), got 1"):
        TrainConfig.build("lora", {"image_prompt": True, "image_prompt_dropout": 1.0})
    for tokens in (0, 17):
        with pytest.raises(ConfigError, match=f"image_prompt_tokens must be 1 to 16, got {tokens}"):
            TrainConfig.build("lora", {"image_prompt": True, "image_prompt_tokens": tokens})


def test_an_attached_adapter_starts_as_the_base_model(tiny):
    unet = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet").eval()
    latents, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    with torch.no_grad():
        base = unet(latents, 10, text).sample
    params = attach(unet, image_embed_dim=32, tokens=4)
    assert all(p.requires_grad for p in params)
    embeds = [torch.randn(2, 1, 32)]
    with torch.no_grad():
        step0 = unet(latents, 10, text, added_cond_kwargs={"image_embeds": embeds}).sample
        with image_prompt.detached(unet):
            without = unet(latents, 10, text).sample
    assert torch.equal(step0, base) and torch.equal(without, base)
    # Nonzero to_v_ip: now the image changes the output (the zero init was what kept it equal).
    with torch.no_grad():
        adapter_state(unet)["ip_adapter.1.to_v_ip.weight"].normal_(0, 0.5)
        moved = unet(latents, 10, text, added_cond_kwargs={"image_embeds": embeds}).sample
    assert (moved - base).abs().max() > 1e-4


def test_the_public_layout_loads_in_plain_diffusers_and_ours_is_the_same(tiny, reference, tmp_path):
    state = hand_written_adapter(tmp_path / "public", tiny)
    pipe = plain_pipe(tiny)
    plain = render(pipe)
    pipe.load_ip_adapter(
        str(tmp_path / "public"),
        subfolder="",
        weight_name="ip_adapter.safetensors",
        image_encoder_folder="image_encoder",
    )
    with_image = render(pipe, ip_adapter_image=reference)
    assert np.abs(with_image - plain).max() > 1e-3
    pipe.set_ip_adapter_scale(0.0)
    assert np.array_equal(render(pipe, ip_adapter_image=reference), plain)

    # Our saver writes the same keys and shapes, and plain diffusers loads it the same way.
    unet = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet")
    attach(unet, image_embed_dim=32, tokens=4)
    image_prompt.load_state(unet, state)
    ours = tmp_path / "ours"
    save_adapter(ours / FILENAME, unet)
    shutil.copytree(tmp_path / "public" / "image_encoder", ours / "image_encoder")
    written = load_file(str(ours / FILENAME))
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in state.items()}
    assert all(torch.equal(written[k], state[k]) for k in state)
    again = plain_pipe(tiny)
    again.load_ip_adapter(str(ours), subfolder="", weight_name=FILENAME)
    assert np.array_equal(render(again, ip_adapter_image=reference), with_image)

    # Our loader takes the same path for a public file and reports what it loaded.
    third = plain_pipe(tiny)
    loaded = load_image_prompt(third, tmp_path / "public", scale=0.5)
    assert (loaded.tokens, loaded.layers, loaded.image_embed_dim) == (4, 4, 32)
    assert loaded.loader == "diffusers load_ip_adapter" and not loaded.trained_by_fairskin
    pipe.set_ip_adapter_scale(0.5)
    assert np.array_equal(
        render(third, ip_adapter_image=reference), render(pipe, ip_adapter_image=reference)
    )


def test_other_token_counts_load_through_our_loader(tiny, reference, tmp_path):
    unet = UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet").eval()
    attach(unet, image_embed_dim=32, tokens=2)
    with torch.no_grad():
        for tensor in adapter_state(unet).values():
            tensor.normal_(0, 0.3)
    save_adapter(tmp_path / FILENAME, unet)
    shutil.copytree(f"{tiny.path}/image_encoder", tmp_path / "image_encoder")
    pipe = plain_pipe(tiny)
    loaded = load_image_prompt(pipe, tmp_path)
    assert (loaded.tokens, loaded.loader, loaded.trained_by_fairskin) == (2, "fairskin", True)
    embeds = pipe.encode_image(reference, "cpu", 1)[0][:, None, :]
    latents, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    cond = {"image_embeds": [embeds]}
    with torch.no_grad():
        a = unet(latents, 5, text, added_cond_kwargs=cond).sample
        b = pipe.unet(latents, 5, text, added_cond_kwargs=cond).sample
    assert torch.allclose(a, b, atol=1e-6)
    assert render(pipe, ip_adapter_image=reference).shape == (1, 32, 32, 3)


def test_malformed_or_mismatched_adapter_files_are_refused(tiny, tmp_path):
    pipe = plain_pipe(tiny)
    good = hand_written_adapter(tmp_path / "good", tiny)

    def refused(state_or_bytes, match, encoder=True):
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        if isinstance(state_or_bytes, bytes):
            (folder / FILENAME).write_bytes(state_or_bytes)
        else:
            save_file(state_or_bytes, str(folder / FILENAME))
        if encoder:
            shutil.copytree(tmp_path / "good" / "image_encoder", folder / "image_encoder")
        with pytest.raises(ImagePromptError, match=match):
            load_image_prompt(pipe, folder)

    refused(b"not a safetensors file", "not a readable safetensors file")
    refused({"unet.lora.weight": torch.zeros(2)}, "not in the IP-Adapter format")
    refused({**good, "image_proj.latents": torch.zeros(1, 16, 32)}, "Plus/Full/FaceID variant")
    wide = dict(good, **{"image_proj.norm.weight": torch.ones(64)})
    refused(wide, "cross-attention width of 64; this UNet's is 32")
    refused(
        dict(good, **{"image_proj.proj.weight": torch.zeros(128, 48)}),
        "reads 48-wide CLIP image embeddings but the image encoder gives 32",
    )
    fewer = {k: v for k, v in good.items() if not k.startswith("ip_adapter.7.")}
    refused(fewer, "do not match this UNet's 4 cross-attention layers")
    refused(good, "no image encoder", encoder=False)
    assert getattr(pipe.unet, "encoder_hid_proj", None) is None  # nothing was changed


def test_a_base_without_an_image_encoder_is_refused(tiny, items, tmp_path):
    folder = tmp_path / "no-encoder"
    shutil.copytree(tiny.path, folder, ignore=shutil.ignore_patterns("image_encoder"))
    base = BaseModel("no-encoder", "local", str(folder))
    assert base.image_encoder_config() is None and tiny.image_encoder_config()["image_size"] == 32
    # What the launch form checks, without building or loading anything.
    unbuilt = resolve_base_model("tiny", cache_dir=tmp_path / "unbuilt", build=False)
    assert unbuilt.image_encoder_config()["projection_dim"] == 32
    sd15 = resolve_base_model("sd15-random", cache_dir=tmp_path, build=False)
    with pytest.raises(NoImageEncoder, match="ViT-H/14 .*projection_dim 1024"):
        sd15.image_encoder_folder()
    config = TrainConfig.build("lora", {"steps": 1, "image_prompt": True, **FAST})
    with pytest.raises(
        NoImageEncoder,
        match=f"add a CLIPVisionModelWithProjection folder at {folder}/image_encoder",
    ):
        train(
            config=config,
            base=base,
            items=items,
            run_dir=tmp_path / "run",
            parents=[tmp_path],
            progress=SilentProgress(),
        )


# --- training ---------------------------------------------------------------------------------


def lora_config(**extra):
    return TrainConfig.build(
        "lora",
        {
            "steps": 6,
            "learning_rate": 1e-2,
            "image_prompt": True,
            "checkpoint_every": 2,
            **FAST,
            **extra,
        },
    )


@pytest.fixture(scope="module")
def ti(tiny, items, tmp_path_factory):
    config = TrainConfig.build("textual_inversion", {"steps": 1, **FAST})
    return train(
        config=config,
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("ti"),
        progress=SilentProgress(),
    ).run_dir


@pytest.fixture(scope="module")
def trained(tiny, items, ti, tmp_path_factory):
    """One uninterrupted LoRA run with the image prompt, shared by the tests below."""
    return train(
        config=lora_config(),
        base=tiny,
        items=items,
        run_dir=tmp_path_factory.mktemp("trained"),
        parents=[ti],
        progress=SilentProgress(),
    )


def test_a_lora_run_trains_the_adapter_and_writes_it_for_plain_diffusers(
    tiny, items, trained, reference
):
    run_dir = trained.run_dir
    state = adapter_state(trained.unet)
    # Moved off zero (to_v_ip first gets a gradient, then to_k_ip), and saved as trained.
    assert all(state[f"ip_adapter.{i}.to_v_ip.weight"].abs().max() > 0 for i in TINY_LAYERS)
    assert all(state[f"ip_adapter.{i}.to_k_ip.weight"].abs().max() > 0 for i in TINY_LAYERS)
    saved = load_file(str(run_dir / FILENAME))
    assert all(torch.equal(saved[k], v.detach().cpu()) for k, v in state.items())
    assert (run_dir / "image_encoder" / "config.json").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["image_prompt"]["tokens"] == 4
    assert manifest["image_prompt"]["plain_diffusers_loadable"] is True
    report = json.loads((run_dir / "training_report.json").read_text())
    assert report["trainable_parameters"]["image_prompt"] == sum(v.numel() for v in state.values())

    # Plain diffusers, no FairSkin code: base + the run's LoRA + its IP-Adapter file.
    pipe = plain_pipe(tiny)
    pipe.load_lora_weights(str(run_dir))
    pipe.load_ip_adapter(str(run_dir), subfolder="", weight_name=FILENAME)
    embeds = pipe.encode_image(reference, "cpu", 1)[0]
    # The training embedded its images the way the pipeline does (same encoder, same
    # preprocessing), so the adapter sees at generation what it learned from.
    ours = image_prompt.embed_images(
        run_dir / "image_encoder", [items[1].path], torch.device("cpu")
    )
    assert torch.allclose(ours, embeds, atol=1e-5)
    latents, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    cond = {"image_embeds": [embeds[:, None, :]]}
    trained.unet.eval()
    with torch.no_grad():
        a = trained.unet(latents, 50, text, added_cond_kwargs=cond).sample
        b = pipe.unet(latents, 50, text, added_cond_kwargs=cond).sample
        zero = pipe.unet(
            latents, 50, text, added_cond_kwargs={"image_embeds": [0 * embeds[:, None, :]]}
        ).sample
    assert torch.allclose(a, b, atol=1e-5)
    assert (b - zero).abs().max() > 1e-6  # the reference image steers the trained UNet
    assert render(pipe, ip_adapter_image=reference).shape == (1, 32, 32, 3)
    assert load_image_prompt(plain_pipe(tiny), run_dir).trained_by_fairskin


class CrashAt(SilentProgress):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def update(self, done, total, message=""):
        super().update(done, total, message)
        if done == self.step:
            raise RuntimeError("worker killed")


def test_a_killed_run_resumes_to_the_uninterrupted_adapter(tiny, items, ti, trained, tmp_path):
    with pytest.raises(RuntimeError, match="worker killed"):
        train(
            config=lora_config(),
            base=tiny,
            items=items,
            run_dir=tmp_path,
            parents=[ti],
            progress=CrashAt(5),
        )
    assert latest_checkpoint(tmp_path).name == "step-000004"
    resumed = train(
        config=lora_config(),
        base=tiny,
        items=items,
        run_dir=tmp_path,
        parents=[ti],
        progress=SilentProgress(),
    )
    assert resumed.resumed_from == 4
    a, b = adapter_state(resumed.unet), adapter_state(trained.unet)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)


def test_runs_without_the_image_prompt_keep_their_settings_hash():
    from fairskin.diffusion.checkpoints import run_identity

    def settings(config):
        return run_identity(
            identity="r", config=config, base_model="tiny", selection_hash="s", parents=[]
        )["settings_hash"]

    off = TrainConfig.build("lora").to_dict()
    without = {k: v for k, v in off.items() if not k.startswith("image_prompt")}
    assert settings(off) == settings(without)
    on = TrainConfig.build("lora", {"image_prompt": True}).to_dict()
    more = TrainConfig.build("lora", {"image_prompt": True, "image_prompt_tokens": 8}).to_dict()
    assert len({settings(off), settings(on), settings(more)}) == 3


def test_a_joint_run_continues_the_adapter_of_its_lora_parent(tiny, items, ti, trained, tmp_path):
    joint = train(
        config=TrainConfig.build(
            "joint", {"steps": 1, "learning_rate": 1e-7, "image_prompt": True, **FAST}
        ),
        base=tiny,
        items=items,
        run_dir=tmp_path,
        parents=[ti, trained.run_dir],
        progress=SilentProgress(),
    )
    parent = load_file(str(trained.run_dir / FILENAME))
    continued = adapter_state(joint.unet)
    assert parent["ip_adapter.7.to_v_ip.weight"].abs().max() > 1e-3
    assert all(torch.allclose(continued[k].detach().cpu(), parent[k], atol=1e-5) for k in parent)
    assert (tmp_path / FILENAME).is_file() and (tmp_path / "image_encoder").is_dir()


def test_a_tiny_folder_built_before_the_image_encoder_gets_the_same_one(tiny, tmp_path):
    from fairskin.diffusion.base_models import materialize

    older = tmp_path / "tiny"
    shutil.copytree(tiny.path, older, ignore=shutil.ignore_patterns("image_encoder"))
    unet_bytes = (older / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert materialize("tiny", cache_dir=tmp_path) == older
    added = load_file(str(older / "image_encoder" / "model.safetensors"))
    fresh = load_file(f"{tiny.path}/image_encoder/model.safetensors")
    assert added.keys() == fresh.keys() and all(torch.equal(added[k], fresh[k]) for k in fresh)
    assert (older / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet_bytes
    # Not a pipeline component: plain from_pretrained leaves it out, as for SD v1.5.
    assert json.loads((older / "model_index.json").read_text())["image_encoder"] == [None, None]


def test_a_reference_embedded_once_conditions_like_the_image(tiny, items, tmp_path):
    from fairskin.diffusion.image_prompt_loader import reference_embeds

    hand_written_adapter(tmp_path, tiny)
    pipe = plain_pipe(tiny)
    load_image_prompt(pipe, tmp_path)
    refs = [Image.open(items[i].path).convert("RGB") for i in (0, 3)]

    def run(on=pipe, **extra):
        return on(
            ["a", "a"],
            num_inference_steps=2,
            height=32,
            width=32,
            generator=[torch.Generator().manual_seed(3 + k) for k in range(2)],
            output_type="np",
            **extra,
        ).images

    first = run(ip_adapter_image=refs[0])
    assert np.array_equal(
        run(ip_adapter_image_embeds=reference_embeds(pipe, refs[0], guidance=True)), first
    )
    assert np.abs(run(ip_adapter_image=refs[1]) - first).max() > 1e-3  # another reference
    with image_prompt.detached(pipe.unet):  # no reference: the plain pipeline
        assert np.array_equal(run(), run(on=plain_pipe(tiny)))
