"""Individual Typology Angle (ITA) of the skin in a lesion photo, and the FST it suggests.

ITA = atan2(L* - 50, b*) * 180 / pi, in degrees, with L*, b* from CIELAB (D65). Lighter skin has
a larger angle.

Which pixels count as skin (``skin_pixel_mask``), in order:

1. Downscale to at most 256 px on the long side (area averaging). ITA is a colour summary; this
   makes it cheap on 6000 px photos and averages away sensor noise.
2. Drop clipped pixels (L* < 3 or > 97): they carry no colour, only exposure failure.
3. Drop a central ellipse spanning 70 % of the width and height, where dermoscopy and clinical
   framing put the lesion.
4. Otsu-split the remaining L* values in two. When the two classes are clearly apart (means at
   least 8 L* units apart), keep only the larger class: outside the centre, skin is the majority,
   and what stands apart from it is a minority of hair, lesion overhang, vignette corners,
   shadows, rulers or glare. Keeping the majority rather than "the lighter class" matters for
   dark skin, where a pink or pearly lesion can be lighter than the skin around it. When the
   split is not clear, the skin is simply uneven and every pixel is kept.
5. The ITA of the image is the median of the per-pixel ITA over the kept pixels; the median
   ignores whatever hair or lesion pixels survive the steps above.

This is a heuristic: it fails when the lesion fills most of the frame or the photo's white
balance is off. ITA agrees with dermatologist FST labels within one type on only about half of
Fitzpatrick17k, so an FST estimated here is stored with its source (``ITA_METHOD``).
"""

from __future__ import annotations

import math
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from fairskin.imaging.colour import image_to_lab

ITA_METHOD = "ita-kinyanjui2020"

# Kinyanjui et al. 2020, "Fairness of classifiers across skin tones in dermatology" (MICCAI):
# I > 55, II 41-55, III 28-41, IV 19-28, V 10-19, VI <= 10. Each pair is (lower bound, type);
# an ITA exactly on a bound belongs to the darker type, as "VI <= 10" states for the last one.
ITA_FST_LOWER_BOUNDS: tuple[tuple[float, int], ...] = (
    (55.0, 1),
    (41.0, 2),
    (28.0, 3),
    (19.0, 4),
    (10.0, 5),
)

_ANALYSIS_SIDE = 256
_CLIPPED_LOW, _CLIPPED_HIGH = 3.0, 97.0
_CENTRE_SEMI_AXIS = 0.35  # fraction of width/height: the ellipse spans 70 % of each
_MIN_CLASS_SEPARATION = 8.0  # L* units between Otsu class means to call the split real


def ita_from_lab(lightness: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-value ITA in degrees from L* and b* (arrays or scalars)."""
    return cast(
        "npt.NDArray[np.float64]",
        np.degrees(np.arctan2(np.asarray(lightness, float) - 50.0, np.asarray(b, float))),
    )


def fst_from_ita(ita: float) -> int:
    """Fitzpatrick type (1-6) for an ITA in degrees, with Kinyanjui et al. 2020 thresholds.

    Boundary values go to the darker type: 55 -> II, 41 -> III, 28 -> IV, 19 -> V, 10 -> VI.
    """
    if math.isnan(ita):
        raise ValueError("ITA is NaN")
    for lower_bound, fst in ITA_FST_LOWER_BOUNDS:
        if ita > lower_bound:
            return fst
    return 6


def ita_value(img: Image.Image) -> float:
    """ITA (degrees) of the skin around the lesion in ``img``; see the module docstring."""
    lab = _analysis_lab(img)
    mask = skin_pixel_mask(lab)
    if not mask.any():
        raise ValueError("no usable skin pixels: the image is blank, clipped or all lesion")
    return float(np.median(ita_from_lab(lab[..., 0][mask], lab[..., 2][mask])))


def skin_pixel_mask(lab: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """Boolean (H, W) mask of the pixels of a CIELAB image that ``ita_value`` treats as skin."""
    lightness = lab[..., 0]
    candidates = (lightness >= _CLIPPED_LOW) & (lightness <= _CLIPPED_HIGH)
    candidates &= ~_central_ellipse(*lightness.shape)
    if candidates.sum() < 2:
        return candidates

    values = lightness[candidates]
    darker = _otsu_darker_class(values)
    if darker.all() or not darker.any():
        return candidates
    if values[~darker].mean() - values[darker].mean() < _MIN_CLASS_SEPARATION:
        return candidates
    majority = darker if darker.sum() >= (~darker).sum() else ~darker
    mask = np.zeros_like(candidates)
    mask[candidates] = majority
    return mask


def _central_ellipse(height: int, width: int) -> npt.NDArray[np.bool_]:
    rows = ((np.arange(height) + 0.5) / height - 0.5) / _CENTRE_SEMI_AXIS
    cols = ((np.arange(width) + 0.5) / width - 0.5) / _CENTRE_SEMI_AXIS
    return rows[:, None] ** 2 + cols[None, :] ** 2 < 1.0


def _analysis_lab(img: Image.Image) -> npt.NDArray[np.float64]:
    rgb = np.asarray(img.convert("RGB"))
    height, width = rgb.shape[:2]
    scale = _ANALYSIS_SIDE / max(height, width)
    if scale < 1.0:
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)
    return image_to_lab(rgb)


def _otsu_darker_class(values: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """Which L* values fall in the darker of Otsu's two classes (split on a 0.5 L* grid)."""
    levels = np.clip(np.rint(values * 2.0), 0, 200).astype(np.uint8)
    threshold, _ = cv2.threshold(levels.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Compare on the same grid Otsu saw: OpenCV's threshold is the last level of the dark class.
    return cast("npt.NDArray[np.bool_]", levels <= threshold)
