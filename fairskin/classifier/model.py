"""The skin-lesion classifier: torchvision ResNet50, a seven-class head, an optional domain
head behind a gradient-reversal layer (DANN)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from fairskin.labels import SEVEN_CLASSES

CLASS_NAMES = [d.value for d in SEVEN_CLASSES]
# The binary view for data that records malignancy (DDI): MEL, BCC and AK count as
# malignant or pre-malignant, so P(malignant) is the sum of their probabilities.
MALIGNANT_CLASSES = ("MEL", "BCC", "AK")
IMAGENET_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forwards; multiplies the gradient by -strength backwards (Ganin & Lempitsky)."""
    return cast("torch.Tensor", _ReverseGradient.apply(x, strength))


class SkinClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(n_features, n_classes)
        # Real vs synthetic discriminator, trained only in the DANN phase.
        self.domain_head = nn.Sequential(nn.Linear(n_features, 256), nn.ReLU(), nn.Linear(256, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.head(self.features(x)))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def find_imagenet_weights(explicit: str | None = None) -> Path | None:
    """A local ResNet50 ImageNet checkpoint: the given file, else torch's hub cache."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ResNet50 weights file {explicit} does not exist")
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return next((cache / name for name in IMAGENET_FILES if (cache / name).is_file()), None)


def build_classifier(
    n_classes: int = len(CLASS_NAMES), *, weights: str | None = None, arch: str = "resnet50"
) -> tuple[SkinClassifier, str]:
    """The classifier and where its backbone weights came from (recorded on the run)."""
    from torchvision import models

    if arch not in ("resnet50", "resnet18"):
        raise ValueError(f"unknown architecture {arch!r}")
    net = getattr(models, arch)(weights=None)
    source = "random initialisation (no ImageNet weights found)"
    path = find_imagenet_weights(weights) if arch == "resnet50" else None
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ValueError(f"{path} is not a torchvision {arch} checkpoint")
        source = f"imagenet: {path.name} (sha256 {_file_digest(path)})"
    n_features = net.fc.in_features
    net.fc = nn.Identity()
    return SkinClassifier(net, n_features, n_classes), source
