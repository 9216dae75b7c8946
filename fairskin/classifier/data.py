"""Classifier data: real and synthetic images mixed with an FST-dependent synthetic share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassifierItem:
    path: str
    label: int  # index into CLASS_NAMES
    fst: int | None
    synthetic: bool = False
    malignant: bool | None = None  # where the dataset records it (DDI)
    key: str | None = None  # a stable image id; paired comparisons match test images by it
    on_the_fly: bool = False  # generated during the run (fairskin.classifier.on_the_fly)


def transforms_for(size: int, *, augment: bool) -> Callable[[Image.Image], torch.Tensor]:
    """Real training images get flips, small rotations and colour jitter; synthetic images
    are never augmented (generation already varied them), and evaluation never is."""
    from torchvision import transforms as T

    steps = [T.Resize((size, size))]
    if augment:
        steps += [
            T.RandomHorizontalFlip(),
            T.RandomRotation(20),
            T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        ]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return cast("Callable[[Image.Image], torch.Tensor]", T.Compose(steps))


class ImageSet(Dataset[tuple[torch.Tensor, int, int]]):
    def __init__(self, items: Sequence[ClassifierItem], size: int, *, train: bool) -> None:
        self.items = list(items)
        self.real = transforms_for(size, augment=train)
        self.plain = transforms_for(size, augment=False)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        item = self.items[index]
        with Image.open(item.path) as img:
            pixels = (self.plain if item.synthetic else self.real)(img.convert("RGB"))
        return pixels, item.label, int(item.synthetic)


def synthetic_share(
    shares: dict[int, float], fst: int | None, *, epoch: int, ramp_epochs: int
) -> float:
    """The synthetic share for a skin type at an epoch; ramps linearly up to it when asked."""
    if fst is None:
        return 0.0
    target = shares.get(fst, 0.0)
    if ramp_epochs > 0:
        target *= min(1.0, (epoch + 1) / ramp_epochs)
    return target


def mixture_weights(
    items: Sequence[ClassifierItem],
    shares: dict[int, float],
    *,
    epoch: int = 0,
    ramp_epochs: int = 0,
    on_the_fly_share: float = 0.0,
) -> torch.Tensor:
    """Sampling weights that make synthetic images a fraction ``share(fst)`` of each skin
    type's draws, keeping each type's overall weight in proportion to its image count.

    Of a type's synthetic draws, ``on_the_fly_share`` go to images generated during the run
    and the rest to released ones. On-the-fly images do not count towards a type's weight
    (the cache's size is a setting, not data), so they change the mixture within a type only.
    Where a type has no synthetic image (or no real one) its draws are all of the other kind;
    likewise between released and on-the-fly images.
    """
    by_fst: dict[int | None, list[int]] = {}
    for i, item in enumerate(items):
        by_fst.setdefault(item.fst, []).append(i)
    weights = torch.zeros(len(items), dtype=torch.float64)
    for fst, indices in by_fst.items():
        fly = [i for i in indices if items[i].on_the_fly]
        released = [i for i in indices if items[i].synthetic and not items[i].on_the_fly]
        real = [i for i in indices if not items[i].synthetic]
        share = synthetic_share(shares, fst, epoch=epoch, ramp_epochs=ramp_epochs)
        if not (fly or released):
            share = 0.0
        elif not real:
            share = 1.0
        fly_share = on_the_fly_share if fly and released else float(bool(fly))
        mass = len(real) + len(released) or len(fly)
        for pool, part in (
            (real, 1 - share),
            (released, share * (1 - fly_share)),
            (fly, share * fly_share),
        ):
            for i in pool:
                weights[i] = mass * part / len(pool)
    return weights
