"""Image loading and LPIPS comparisons shared by the reference build and candidate scoring.

The reference's real-vs-real values and a candidate's scores must be measured the same way, or
a relative threshold compares different quantities; so both go through these functions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fairskin.imaging.decode import decode_image_file
from fairskin.imaging.resize import to_square
from fairskin.metrics.extractors import PerceptualDistance

_LPIPS_CHUNK = 64  # image pairs per LPIPS forward pass: bounds memory at 512 px
_TRAINING_CACHE = 64  # decoded training images kept between batches


def load_uint8(paths: Sequence[str], size: int) -> torch.Tensor:
    """(n, 3, size, size) uint8: decoded upright RGB, centre-cropped square and resized."""
    pixels = [
        np.asarray(to_square(decode_image_file(path), size), dtype=np.uint8) for path in paths
    ]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255


def pairwise_lpips(
    distance: PerceptualDistance,
    left: torch.Tensor,
    right: torch.Tensor,
    left_index: torch.Tensor,
    right_index: torch.Tensor,
) -> torch.Tensor:
    """LPIPS of left[left_index[j]] vs right[right_index[j]] for every j, in chunks."""
    parts = [
        distance(left[left_index[s : s + _LPIPS_CHUNK]], right[right_index[s : s + _LPIPS_CHUNK]])
        for s in range(0, len(left_index), _LPIPS_CHUNK)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, device=left.device)


class TrainingImages:
    """Training images by id, decoded on demand with a small LRU cache."""

    def __init__(self, paths: Mapping[str, str], size: int, device: torch.device) -> None:
        self.paths = dict(paths)
        self.size = size
        self.device = device
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def images(self, ids: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(i for i in ids if i not in self.cache))
        if missing:
            loaded = load_uint8([self.paths[i] for i in missing], self.size)
            for image_id, pixels in zip(missing, loaded, strict=True):
                self.cache[image_id] = pixels.clone()  # not a view pinning the whole stack
        stacked = torch.stack([self.cache[i] for i in ids])
        for image_id in ids:
            self.cache.move_to_end(image_id)
        while len(self.cache) > _TRAINING_CACHE:
            self.cache.popitem(last=False)
        return stacked.to(self.device)


def nearest_lpips(
    distance: PerceptualDistance,
    queries: torch.Tensor,
    neighbour_ids: list[list[str]],
    loader: TrainingImages,
) -> tuple[np.ndarray, list[str | None]]:
    """For each query image, the smallest LPIPS to its proposed neighbours, and which one."""
    unique = list(dict.fromkeys(i for ids in neighbour_ids for i in ids))
    if not unique:
        return np.full(len(neighbour_ids), np.nan), [None] * len(neighbour_ids)
    position = {image_id: k for k, image_id in enumerate(unique)}
    neighbours = as_float(loader.images(unique))
    left = [q for q, ids in enumerate(neighbour_ids) for _ in ids]
    right = [position[i] for ids in neighbour_ids for i in ids]
    flat = (
        pairwise_lpips(
            distance,
            queries,
            neighbours,
            torch.tensor(left, dtype=torch.long, device=queries.device),
            torch.tensor(right, dtype=torch.long, device=queries.device),
        )
        .cpu()
        .numpy()
    )
    best_values: list[float] = []
    best_ids: list[str | None] = []
    offset = 0
    for ids in neighbour_ids:
        row = flat[offset : offset + len(ids)]
        offset += len(ids)
        k = int(np.argmin(row))
        best_values.append(float(row[k]))
        best_ids.append(ids[k])
    return np.asarray(best_values), best_ids
