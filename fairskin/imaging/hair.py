"""DullRazor-style hair removal (Lee et al. 1997) with OpenCV.

Hairs are thin and darker than the skin under them. A morphological closing with a line longer
than a hair is wide fills the hair in; closing minus the image (the black-hat) is therefore large
on hairs and near zero on skin and on dark areas wider than the line, such as the lesion body.
Lines in four orientations catch hairs at any angle. Thresholding the strongest black-hat
response gives the mask; small or compact blobs (pores, dots inside a lesion) are dropped, the
mask is dilated to cover the hair's soft edge, and the pixels are filled by Telea inpainting.

One addition to the published method: a line cannot follow a curved edge, so along the rim of a
high-contrast lesion the black-hat also fires in a thin ring that would be inpainted away. A hair
is a valley, darker than the skin on both sides; a rim pixel is not darker than the lesion on
its inner side. Pixels must also pass that two-sided test to count as hair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image


@dataclass(frozen=True)
class HairRemovalParams:
    """Settings tuned for 512 px dermoscopy/clinical images; scale lengths with image size."""

    # Longer than a hair is wide (2-6 px at 512 px) and shorter than a lesion is wide.
    line_length: int = 17
    # Minimum black-hat response, in 8-bit grey levels, for a pixel to count as hair.
    threshold: float = 12.0
    # Connected pieces smaller than this many pixels are noise, not hair.
    min_area: int = 25
    # Hairs are long and thin: (bounding-box diagonal)^2 / area is about length/width for a
    # line and about 2.5 for a disc. Pieces below this ratio are dots, not hair.
    min_elongation: float = 5.0
    # Extra pixels around each hair, so inpainting does not copy its anti-aliased fringe.
    dilation: int = 1
    inpaint_radius: int = 5

    def __post_init__(self) -> None:
        if self.line_length < 3:
            raise ValueError(f"line_length must be at least 3, got {self.line_length}")
        if self.dilation < 0 or self.inpaint_radius < 1 or self.min_area < 0:
            raise ValueError("dilation and min_area must be >= 0, inpaint_radius >= 1")


DEFAULT_PARAMS = HairRemovalParams()


def hair_mask(
    img: Image.Image, params: HairRemovalParams = DEFAULT_PARAMS
) -> npt.NDArray[np.bool_]:
    """Boolean (H, W) mask of the pixels DullRazor takes for hair (dilation included)."""
    gray = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2GRAY)
    # A light blur keeps single-pixel sensor noise from passing the threshold.
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    response = np.zeros(gray.shape, dtype=np.uint8)
    for kernel in _line_kernels(params.line_length):
        np.maximum(response, cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel), out=response)
    # The valley test only has to veto edges, where it is zero or negative; half the threshold
    # keeps faint one-pixel hairs, whose blurred contrast is barely above the threshold.
    valley = _valley_depth(gray, max(2, params.line_length // 3))
    mask = ((response > params.threshold) & (valley > params.threshold / 2)).astype(np.uint8)
    mask = _drop_compact_pieces(mask, params.min_area, params.min_elongation)
    if params.dilation > 0:
        side = 2 * params.dilation + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    return mask.astype(bool)


def remove_hair(img: Image.Image, params: HairRemovalParams = DEFAULT_PARAMS) -> Image.Image:
    """``img`` as RGB with the pixels of ``hair_mask`` inpainted from their surroundings."""
    rgb = np.asarray(img.convert("RGB"))
    mask = hair_mask(img, params)
    if not mask.any():
        return Image.fromarray(rgb.copy())
    filled = cv2.inpaint(rgb, mask.astype(np.uint8), params.inpaint_radius, cv2.INPAINT_TELEA)
    return Image.fromarray(filled)


def _line_kernels(length: int) -> list[npt.NDArray[np.uint8]]:
    horizontal = np.ones((1, length), dtype=np.uint8)
    diagonal = np.eye(length, dtype=np.uint8)
    return [horizontal, horizontal.T.copy(), diagonal, np.fliplr(diagonal).copy()]


def _valley_depth(gray: npt.NDArray[np.uint8], distance: int) -> npt.NDArray[np.int16]:
    """How much darker each pixel is than the darker of its two neighbours ``distance`` px away
    on opposite sides, for the best of four directions."""
    padded = np.pad(gray.astype(np.int16), distance, mode="edge")
    height, width = gray.shape
    diagonal = max(1, round(distance / np.sqrt(2)))

    def shifted(dy: int, dx: int) -> npt.NDArray[np.int16]:
        return padded[distance + dy : distance + dy + height, distance + dx : distance + dx + width]

    depth = np.full(gray.shape, np.iinfo(np.int16).min, dtype=np.int16)
    for dy, dx in ((0, distance), (distance, 0), (diagonal, diagonal), (diagonal, -diagonal)):
        sides = np.minimum(shifted(dy, dx), shifted(-dy, -dx))
        np.maximum(depth, sides - gray, out=depth)
    return depth


def _drop_compact_pieces(
    mask: npt.NDArray[np.uint8], min_area: int, min_elongation: float
) -> npt.NDArray[np.uint8]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    widths = stats[1:, cv2.CC_STAT_WIDTH].astype(np.float64)
    heights = stats[1:, cv2.CC_STAT_HEIGHT].astype(np.float64)
    elongation = (widths**2 + heights**2) / areas
    keep = np.concatenate([[False], (areas >= min_area) & (elongation >= min_elongation)])
    return cast("npt.NDArray[np.uint8]", keep[labels].astype(np.uint8))
