"""Feature extractors (Inception for FID/KID, LPIPS, CLIP image embeddings), and the provenance
recorded with every value they produce.

Metrics are only comparable when computed with the same network weights, and a metric from
random weights is no FID at all. So every extractor comes with an `ExtractorInfo` that the
caller stores next to the number and shows as its label.

Note on comparability: these are torchvision's Inception-v3 weights when given torchvision's
checkpoint. Published FIDs use the TF "FID Inception" graph (pytorch-fid's port), whose pooling
differs in a few blocks, so values from here are comparable with each other, not with papers.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception_v3

INCEPTION_NAME = "inception-v3 pool3"
INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048
# Random weights are seeded so that uncalibrated values at least reproduce run to run.
RANDOM_WEIGHTS_SEED = 0
_DIGEST_CHARS = 16
# torchvision's ImageNet normalisation, the documented input of its Inception weights.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

FeatureExtractor = Callable[[torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class ExtractorInfo:
    """Which network and which weights produced a set of features."""

    name: str
    # The checkpoint's sha256 prefix when calibrated, else a description of the random init.
    weights: str
    calibrated: bool

    @property
    def label(self) -> str:
        if self.calibrated:
            return f"{self.name} (weights sha256 {self.weights}…)"
        return f"{self.name} (random weights: uncalibrated)"


def inception_features_extractor(
    weights_path: str | None, *, device: str | torch.device = "cpu"
) -> tuple[FeatureExtractor, ExtractorInfo]:
    """Inception-v3 returning the 2048-d pool features, and its provenance.

    `weights_path` is a local torchvision Inception-v3 state dict (e.g.
    inception_v3_google-0cc3c7bd.pth). Without one the network has seeded random weights and
    `calibrated` is False: whatever is computed with it must be labelled uncalibrated.
    """
    path = None if weights_path is None else Path(weights_path)
    # Checked before building the network, which takes a moment.
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no Inception weights file at {path}")
    # Initialisation draws from torch's RNG; fork_rng keeps the caller's global state untouched,
    # and the fixed seed makes the random-weights network the same every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        # transform_input=True is how torchvision builds the model for its own weights: they
        # were ported from TF and expect [-1, 1] input, converted here from ImageNet-normalised.
        model = inception_v3(
            weights=None, aux_logits=True, init_weights=False, transform_input=True
        )
        if path is None:
            _scale_preserving_init(model)
    if path is None:
        info = ExtractorInfo(INCEPTION_NAME, f"random (seed {RANDOM_WEIGHTS_SEED})", False)
    else:
        _load_checkpoint(model, path)
        info = ExtractorInfo(INCEPTION_NAME, sha256_prefix(path), True)

    # Loading needs the 1000-way fc present (the checkpoint has it); the features are its input.
    model.fc = nn.Identity()
    model.eval().to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(images: torch.Tensor) -> np.ndarray:
        _check_images(images)
        x = images.to(device=device, dtype=torch.float32)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            # Antialiasing matters when shrinking 512 px images: aliased resizing measurably
            # shifts FID (Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN
            # Evaluation", 2022), and it is what torchvision's own Resize does on tensors.
            x = F.interpolate(
                x,
                size=(INCEPTION_SIZE, INCEPTION_SIZE),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        features = model((x - mean) / std)
        return cast("np.ndarray", features.double().cpu().numpy())

    return extract, info


def _scale_preserving_init(model: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU gain) convolutions for the random-weights network.

    In eval mode a fresh BatchNorm is the identity, so the conv init alone sets the activation
    scale through ~90 layers. PyTorch's default conv init shrinks it each layer and the pool
    features come out around 1e-8 (covariances ~1e-19, buried under FID's eps * I offset);
    torchvision's init_weights=True (std 0.1) blows them up to ~1e10. Kaiming keeps them O(1),
    so uncalibrated values still respond to the images.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")


def _load_checkpoint(model: nn.Module, path: Path) -> None:
    # weights_only refuses pickled code: a weights file must not be able to run anything.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} is not a torchvision Inception-v3 (aux_logits) state dict: {exc}"
        ) from exc


def sha256_prefix(path: str | Path) -> str:
    """The short sha256 that names a weights file in provenance labels."""
    digest = hashlib.sha256()
    path = Path(path)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:_DIGEST_CHARS]


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor batch, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) batch, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
    low, high = images.min().item(), images.max().item()
    # Catches 0-255 pixels or already-normalised input, which would silently skew the features.
    if low < 0.0 or high > 1.0 or not np.isfinite([low, high]).all():
        raise ValueError(f"images must lie in [0, 1], got values in [{low}, {high}]")


# --- LPIPS -------------------------------------------------------------------------------------

LPIPS_NAME = "lpips v0.1 alex"

PerceptualDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lpips_metric(
    backbone_weights: str | None, *, device: str | torch.device = "cpu"
) -> tuple[PerceptualDistance, ExtractorInfo]:
    """LPIPS (Zhang et al. 2018) with the AlexNet trunk, and its provenance.

    The calibrated linear layers ship inside the `lpips` package; the AlexNet trunk's ImageNet
    weights do not and cannot be downloaded here. `backbone_weights` is a local torchvision
    AlexNet state dict (e.g. alexnet-owt-7be5be79.pth); without one the trunk has seeded random
    weights and the distances are labelled uncalibrated.

    Returns fn(a, b) giving one distance per pair of images of two (N, 3, H, W) batches in
    [0, 1], as an (N,) tensor left on the device.
    """
    import lpips

    path = None if backbone_weights is None else Path(backbone_weights)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no AlexNet weights file at {path}")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        # lpips asks torchvision for `alexnet(pretrained=False)`; torchvision 0.29 still accepts
        # that (deprecated) spelling and builds the untrained network, with warnings that only
        # concern the spelling.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if path is None:
        info = ExtractorInfo(LPIPS_NAME, f"random trunk (seed {RANDOM_WEIGHTS_SEED})", False)
    else:
        _load_alexnet_trunk(model.net, path)
        info = ExtractorInfo(LPIPS_NAME, sha256_prefix(path), True)
    model.eval().to(device)

    @torch.no_grad()
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_images(a)
        _check_images(b)
        if a.shape != b.shape:
            raise ValueError(
                f"LPIPS compares pairs: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        a = a.to(device=device, dtype=torch.float32)
        b = b.to(device=device, dtype=torch.float32)
        # The network expects [-1, 1].
        return cast("torch.Tensor", model(a * 2 - 1, b * 2 - 1).flatten())

    return distance, info


def _load_alexnet_trunk(trunk: nn.Module, path: Path) -> None:
    """Copy torchvision AlexNet `features.*` weights into lpips' sliced trunk.

    lpips splits `features` into slice1..slice5 but keeps each layer's original index as its
    name (slice2.3 is features.3), so the keys map one to one.
    """
    from torchvision.models import alexnet

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    # Loading into a whole AlexNet first checks every key and shape, classifier included.
    try:
        alexnet(weights=None).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a torchvision AlexNet state dict: {exc}") from exc
    trunk_state = {key: state[f"features.{key.split('.', 1)[1]}"] for key in trunk.state_dict()}
    trunk.load_state_dict(trunk_state, strict=True)


# --- CLIP image embeddings ---------------------------------------------------------------------

DEFAULT_CLIP_MODEL = "ViT-B-32"

Embedder = Callable[[torch.Tensor], np.ndarray]


def clip_image_embedder(
    model: str = DEFAULT_CLIP_MODEL,
    weights_path: str | None = None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[Embedder, ExtractorInfo]:
    """open_clip image tower giving L2-normalised float32 embeddings, and its provenance.

    `model` is an open_clip model name (ViT-B-32) or the path of a JSON open_clip model config
    (embed_dim, vision_cfg, text_cfg). `weights_path` is a local open_clip checkpoint for that
    architecture; without one the weights are seeded random and `calibrated` is False.
    """
    import open_clip

    path = None if weights_path is None else Path(weights_path)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"no CLIP weights file at {path}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        network, name = _build_clip(open_clip, model)
    if path is None:
        info = ExtractorInfo(name, f"random (seed {RANDOM_WEIGHTS_SEED})", False)
    else:
        try:
            open_clip.load_checkpoint(network, str(path), strict=True, weights_only=True)
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"{path} is not an open_clip checkpoint for {name}: {exc}") from exc
        info = ExtractorInfo(name, sha256_prefix(path), True)
    network.eval().to(device)

    preprocess = open_clip.get_model_preprocess_cfg(network)
    size = preprocess["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    interpolation = preprocess.get("interpolation", "bicubic")
    mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device)
    std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), device=device)

    @torch.no_grad()
    def embed(images: torch.Tensor) -> np.ndarray:
        _check_images(images)
        x = images.to(device=device, dtype=torch.float32)
        if x.shape[-2:] != size:
            # Square images to a square input: the same as CLIP's shortest-side resize plus
            # centre crop. Bicubic overshoots, so clamp back to the pixel range as PIL does.
            x = F.interpolate(
                x, size=size, mode=interpolation, align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
        x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        # open_clip is untyped: nn.Module's __getattr__ cannot tell that encode_image exists.
        return cast(
            "np.ndarray", cast(Any, network).encode_image(x, normalize=True).float().cpu().numpy()
        )

    return embed, info


def _build_clip(open_clip: Any, model: str) -> tuple[nn.Module, str]:
    if model.endswith(".json"):
        config_path = Path(model)
        if not config_path.is_file():
            raise FileNotFoundError(f"no open_clip model config at {config_path}")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
        config = config.get("model_cfg", config) if isinstance(config, dict) else config
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(
            config
        ):
            raise ValueError(
                f"{config_path} is not an open_clip model config: it needs embed_dim, "
                "vision_cfg and text_cfg"
            )
        config = dict(config)
        model_class = (
            open_clip.CustomTextCLIP if config.pop("custom_text", False) else (open_clip.CLIP)
        )
        try:
            network = model_class(**config)
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{config_path} is not a usable open_clip config: {exc}") from exc
        return network, f"open_clip {config_path.stem} (config {sha256_prefix(config_path)})"
    if model not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model!r}; give a model name such as "
            f"{DEFAULT_CLIP_MODEL} or the path of a JSON model config"
        )
    return open_clip.create_model(model, pretrained=None), f"open_clip {model}"
