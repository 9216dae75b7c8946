"""Base models a run starts from: a diffusers folder or hub id, `tiny`, or `sd15-random`.

`tiny` (the SD v1.5 architecture at toy width, for tests and the demo) and `sd15-random` (the
exact SD v1.5 shape with random weights, for throughput benchmarks) are written once as ordinary
diffusers folders that `StableDiffusionPipeline.from_pretrained` opens with no project code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

TINY = "tiny"
SD15_RANDOM = "sd15-random"
SD15_CONFIGS = "fairskin.diffusion.configs"
# What the UNet may predict for FairSkin to train it (the same as `losses.PREDICTION_TYPES`,
# repeated here so that web processes read it without importing torch).
TRAINABLE_PREDICTIONS = ("epsilon", "v_prediction")

# The tiny model keeps every component type and block kind of SD v1.5 at toy sizes.
TINY_UNET = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "vocab_size": 49_408,
    "bos_token_id": 49_406,
    "eos_token_id": 49_407,
    "pad_token_id": 49_407,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}
# The tiny model's image encoder (a CLIPVisionModelWithProjection) for the image-prompt adapter,
# which reads its projected image embedding (projection_dim wide; 1024 for the ViT-H/14 that
# the public SD v1.5 IP-Adapter ships with).
TINY_IMAGE_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}
IMAGE_ENCODER_DIR = "image_encoder"
SD15_ENCODER_HINT = (
    "for SD v1.5, the ViT-H/14 image encoder the public IP-Adapter ships with: "
    "h94/IP-Adapter models/image_encoder, projection_dim 1024"
)


class BaseModelError(ValueError):
    """The base model cannot be found or opened."""


class NoImageEncoder(BaseModelError):
    """The base model has no image encoder (for the image-prompt adapter)."""


# Each component's config file inside a diffusers folder.
CONFIG_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
IMAGE_ENCODER_CONFIG = f"{IMAGE_ENCODER_DIR}/config.json"  # optional: not every model has one


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model. Its shape is read from the components' config files, never by
    loading weights, so a request can validate against it.

    Where the files come from: a local folder's own files; for `tiny` and `sd15-random` their
    folder once built, else the configs they are built from; for a hub id the files in the local
    Hugging Face cache, else SD v1.5's (the model FairSkin is made for). A local folder whose
    file is missing, unreadable, not JSON or lacks the value raises `BaseModelError` naming it.
    """

    spec: str  # what the user asked for
    source: str  # tiny | sd15-random | local | hub
    path: str  # a local folder, or the hub id

    def describe(self) -> str:
        return f"{self.spec} ({self.source}: {self.path})"

    def config(self, component: str) -> dict[str, Any]:
        """The config JSON of one component: unet, vae, text_encoder or scheduler."""
        relative = CONFIG_FILES[component]
        if self.source == "hub":
            cached = _hub_cached_file(self.path, relative)
            if cached is None:
                return _sd15_config(component)
            return _read_config(cached, self)
        folder = Path(self.path)
        if self.source in (TINY, SD15_RANDOM) and not (folder / "model_index.json").is_file():
            return _builtin_config(self.source, component)
        return _read_config(folder / relative, self)

    def native_size(self) -> int:
        """The image side the UNet was trained at, in pixels (512 for SD v1.5): its latent
        sample size times the VAE's downscaling (2 per down block after the first)."""
        unet, vae = self.config("unet"), self.config("vae")
        sample_size = _value(unet, "sample_size", self, "unet")
        blocks = _value(vae, "block_out_channels", self, "vae")
        if not isinstance(sample_size, int) or not isinstance(blocks, list) or not blocks:
            raise BaseModelError(
                f"base model {self.describe()}: unet sample_size or vae "
                "block_out_channels is not what a Stable Diffusion model has"
            )
        return sample_size * int(2 ** (len(blocks) - 1))

    def image_encoder_config(self) -> dict[str, Any] | None:
        """The config of the model's image encoder (``image_encoder/``, a CLIP vision model
        with projection, what an image-prompt adapter embeds images with), or None when the
        model has none. `tiny` has one; `sd15-random` and SD v1.5 itself do not."""
        if self.source == "hub":
            cached = _hub_cached_file(self.path, IMAGE_ENCODER_CONFIG)
            return _read_config(cached, self) if cached is not None else None
        folder = Path(self.path)
        if self.source in (TINY, SD15_RANDOM) and not (folder / "model_index.json").is_file():
            return dict(TINY_IMAGE_ENCODER) if self.source == TINY else None
        path = folder / IMAGE_ENCODER_CONFIG
        return _read_config(path, self) if path.is_file() else None

    def image_encoder_folder(self) -> Path:
        """Where the image encoder's files are; refused (`NoImageEncoder`, naming the folder
        to add) when the model has none. For a hub model, its snapshot in the local cache."""
        if self.image_encoder_config() is None:
            where = f"{self.path}/{IMAGE_ENCODER_DIR}" if self.source != "hub" else "its"
            raise NoImageEncoder(
                f"image_prompt needs an image encoder, and base model {self.describe()} has "
                f"none: add a CLIPVisionModelWithProjection folder at {where} "
                f"{'' if self.source != 'hub' else IMAGE_ENCODER_DIR + ' '}({SD15_ENCODER_HINT})"
            )
        if self.source == "hub":
            cached = _hub_cached_file(self.path, IMAGE_ENCODER_CONFIG)
            assert cached is not None  # image_encoder_config found it
            return cached.parent
        return Path(self.path) / IMAGE_ENCODER_DIR

    def text_encoder_width(self) -> int:
        """The width of the text encoder's token embeddings (768 for SD v1.5): what a textual
        inversion or a LoRA made for this model must match."""
        width = _value(self.config("text_encoder"), "hidden_size", self, "text_encoder")
        if not isinstance(width, int):
            raise BaseModelError(
                f"base model {self.describe()}: text_encoder hidden_size "
                f"{width!r} is not a whole number"
            )
        return width

    def prediction_type(self) -> str:
        """What the UNet predicts: "epsilon" (SD v1.5), "v_prediction" or "sample". A scheduler
        config without the key means diffusers' default, "epsilon"."""
        return str(self.config("scheduler").get("prediction_type", "epsilon"))

    def trainable_prediction_type(self) -> str:
        """`prediction_type`, refused (`BaseModelError`, naming the model and the value) unless
        FairSkin trains it: "epsilon" or "v_prediction" (`losses.PREDICTION_TYPES`)."""
        prediction = self.prediction_type()
        if prediction not in TRAINABLE_PREDICTIONS:
            raise BaseModelError(
                f"base model {self.describe()} predicts {prediction!r} (its scheduler config's "
                f"prediction_type); FairSkin trains {' or '.join(TRAINABLE_PREDICTIONS)} models"
            )
        return prediction


def _sd15_config(component: str) -> dict[str, Any]:
    text = resources.files(SD15_CONFIGS).joinpath("sd15", component, "config.json")
    if component == "scheduler":
        text = resources.files(SD15_CONFIGS).joinpath("sd15", "scheduler", "scheduler_config.json")
    return cast("dict[str, Any]", json.loads(text.read_text()))


def _builtin_config(spec: str, component: str) -> dict[str, Any]:
    """The config `materialize` writes for a built-in model's component."""
    if spec == TINY and component != "scheduler":
        return dict({"unet": TINY_UNET, "vae": TINY_VAE, "text_encoder": TINY_TEXT}[component])
    return _sd15_config(component)


def _read_config(path: Path, base: BaseModel) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise BaseModelError(
            f"base model {base.describe()}: cannot read {path} ({exc.strerror or exc})"
        ) from exc
    except ValueError as exc:
        raise BaseModelError(
            f"base model {base.describe()}: {path} is not valid JSON ({exc})"
        ) from exc
    if not isinstance(config, dict):
        raise BaseModelError(f"base model {base.describe()}: {path} is not a JSON object")
    return config


def _value(config: dict[str, Any], key: str, base: BaseModel, component: str) -> Any:
    if key not in config:
        raise BaseModelError(
            f"base model {base.describe()}: {CONFIG_FILES[component]} has no {key!r}"
        )
    return config[key]


def _hub_cached_file(repo_id: str, relative: str) -> Path | None:
    """A hub model's file in the local Hugging Face cache, or None when it is not there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, relative)
    return Path(found) if isinstance(found, str) else None


def _write_pipeline(
    folder: Path,
    *,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_config: dict[str, Any],
    seed: int,
) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from fairskin.diffusion.tokenizer import write_clip_tokenizer

    torch.manual_seed(seed)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(staging / "_tokenizer"))
    scheduler_config = _strip(_sd15_config("scheduler"))
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_config),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_config),
        # Training uses DDPM with SD v1.5's own schedule (scaled_linear, 1000 steps, epsilon).
        scheduler=DDPMScheduler.from_config(scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(staging, safe_serialization=True)
    shutil.rmtree(staging / "_tokenizer")
    if unet_config is TINY_UNET:
        _write_tiny_image_encoder(staging, seed)
    # Renamed into place only when complete, so a crash never leaves a half-written model.
    staging.rename(folder)


def _write_tiny_image_encoder(folder: Path, seed: int) -> None:
    """``folder/image_encoder``: the tiny model's CLIP image encoder, seeded on its own so the
    other components' weights are the same with or without it. Not listed in
    model_index.json (plain ``from_pretrained`` leaves it out, as for SD v1.5's folder);
    ``pipe.load_ip_adapter(..., image_encoder_folder=...)`` and FairSkin read it."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    target = folder / IMAGE_ENCODER_DIR
    staging = folder / f"{IMAGE_ENCODER_DIR}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE_ENCODER))
    encoder.save_pretrained(staging, safe_serialization=True)
    try:
        staging.rename(target)
    except OSError:  # another process wrote it first
        shutil.rmtree(staging, ignore_errors=True)


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def materialize(spec: str, *, cache_dir: Path, seed: int = 0) -> Path:
    """Write the `tiny` or `sd15-random` model folder under ``cache_dir`` unless present."""
    folder = Path(cache_dir) / spec
    if (folder / "model_index.json").exists():
        if spec == TINY and not (folder / IMAGE_ENCODER_CONFIG).is_file():
            _write_tiny_image_encoder(folder, seed)  # a tiny folder built before it had one
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    if spec == TINY:
        _write_pipeline(
            folder, unet_config=TINY_UNET, vae_config=TINY_VAE, text_config=TINY_TEXT, seed=seed
        )
    elif spec == SD15_RANDOM:
        text = _strip(_sd15_config("text_encoder"))
        text.pop("architectures", None)
        text.update(bos_token_id=49_406, eos_token_id=49_407, pad_token_id=49_407)
        _write_pipeline(
            folder,
            unet_config=_strip(_sd15_config("unet")),
            vae_config=_strip(_sd15_config("vae")),
            text_config=text,
            seed=seed,
        )
    else:
        raise BaseModelError(f"{spec!r} is not a model FairSkin can build")
    return folder


def resolve_base_model(spec: str, *, cache_dir: Path, build: bool = True) -> BaseModel:
    """Where a run's base model lives. Builds `tiny`/`sd15-random` on first use.

    A local folder must be a diffusers Stable Diffusion folder (model_index.json). Anything
    else that looks like `owner/name` is taken as a hub id, loaded from the local cache (this
    deployment may have no internet; `HF_HUB_OFFLINE` is honoured by diffusers). With
    ``build=False`` the built-in models are only named, not written (validation in a request).
    """
    spec = (spec or "").strip()
    if not spec:
        raise BaseModelError("no base model given")
    if spec in (TINY, SD15_RANDOM):
        folder = materialize(spec, cache_dir=cache_dir) if build else Path(cache_dir) / spec
        return BaseModel(spec, spec, str(folder))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise BaseModelError(f"{spec} is not a diffusers model folder (no model_index.json)")
        return BaseModel(spec, "local", str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return BaseModel(spec, "hub", spec)
    raise BaseModelError(
        f"base model {spec!r} not found: give a diffusers folder, a hub id, "
        f"{TINY!r} or {SD15_RANDOM!r}"
    )


def check_loadable(base: BaseModel) -> None:
    """Fail early (before a run is queued) if a hub model is not in the local cache."""
    if base.source != "hub":
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(base.path, "model_index.json"), str):
        raise BaseModelError(
            f"hub model {base.path!r} is not in the local Hugging Face cache; download it "
            "first (huggingface-cli download) or give a local folder"
        )


FINGERPRINT_FILE = ".fingerprint.json"


def fingerprint(folder: Path) -> str:
    """The sha256 of a built model folder's files (names and contents), remembered in the
    folder by each file's size and mtime so that it is hashed once per host. Two hosts that
    built `tiny` or `sd15-random` differently (another library version drawing other random
    weights) get different fingerprints."""
    import hashlib

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != FINGERPRINT_FILE)
    stamp = [
        [p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files
    ]
    memo = Path(folder) / FINGERPRINT_FILE
    try:
        known = json.loads(memo.read_text())
        if known.get("files") == stamp:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    total = hashlib.sha256()
    for p, (rel, _, _) in zip(files, stamp, strict=True):
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        total.update(f"{rel}\0{digest.hexdigest()}\n".encode())
    sha = total.hexdigest()
    tmp = memo.with_name(memo.name + ".tmp")
    tmp.write_text(json.dumps({"sha256": sha, "files": stamp}))
    os.replace(tmp, memo)
    return sha
