"""sRGB <-> CIELAB conversion (D65 white, 2-degree observer), L* in 0-100.

The forward direction is written out in NumPy because OpenCV's float sRGB->Lab path interpolates
the sRGB curve through a table and is off by up to ~0.3 L*/b*, which shows up in ITA. The reverse
direction (used to paint demo images) goes through OpenCV, which is within a tenth of an 8-bit
step there and ten times faster than NumPy on a 512 px image.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

# IEC 61966-2-1 sRGB primaries to XYZ, and the D65 reference white those matrices assume.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def srgb_to_lab(rgb: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Convert sRGB values in [0, 1] (last axis = R, G, B) to CIELAB (last axis = L*, a*, b*)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected a last axis of 3 (R, G, B), got shape {rgb.shape}")
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_srgb(lab: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Convert CIELAB (last axis = L*, a*, b*) to sRGB in [0, 1], clipping out-of-gamut colours."""
    lab = np.asarray(lab, dtype=np.float32)
    if lab.shape[-1] != 3:
        raise ValueError(f"expected a last axis of 3 (L*, a*, b*), got shape {lab.shape}")
    # cvtColor wants an image; any leading shape is flattened into one row and restored.
    flat = np.ascontiguousarray(lab.reshape(1, -1, 3))
    rgb = cv2.cvtColor(flat, cv2.COLOR_Lab2RGB).reshape(lab.shape)
    return cast("npt.NDArray[np.float32]", np.clip(rgb, 0.0, 1.0))


def image_to_lab(rgb_uint8: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """CIELAB of an 8-bit RGB image array of shape (H, W, 3)."""
    return srgb_to_lab(rgb_uint8.astype(np.float64) / 255.0)


def lab_to_image(lab: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """8-bit RGB image array from a CIELAB array of shape (H, W, 3), rounded to nearest."""
    return (lab_to_srgb(lab) * 255.0 + 0.5).astype(np.uint8)
