"""Drawing primitives for the procedural demo images, all working on float32 CIELAB canvases.

Painting in CIELAB keeps colours meaningful (a lesion is "20 L* darker than this skin"), and one
Lab->sRGB conversion at the end is cheap. Smooth random fields are drawn on a coarse grid and
upsampled, which costs far less than filtering full-size noise.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]
Lab = npt.NDArray[np.float32]  # shape (3,) colour or (H, W, 3) field

_SUBPIXEL_BITS = 4  # fillPoly/polylines take 1/16-pixel coordinates for smooth anti-aliasing


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> FloatImage:
    """A (size, size) random field with about unit spread and features size/cells pixels wide."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cast("FloatImage", cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC))


def smoothstep(values: FloatImage, low: float, high: float) -> FloatImage:
    """0 below ``low``, 1 above ``high``, a smooth S-curve between."""
    t = np.clip((values - low) / (high - low), 0.0, 1.0)
    return cast("FloatImage", t * t * (3.0 - 2.0 * t))


def blob_outline(
    rng: np.random.Generator,
    centre: npt.NDArray[np.float64],
    radius: float,
    *,
    irregularity: float,
    harmonics: int,
    aspect: float = 1.0,
    lopsidedness: float = 0.0,
    points: int = 160,
) -> npt.NDArray[np.float64]:
    """Closed (points, 2) x/y outline: a randomly rotated ellipse with a wobbly radius.

    ``irregularity`` scales the random harmonics 2..``harmonics`` of the radius (border shape);
    ``lopsidedness`` the first harmonic, which pushes the shape off-centre (asymmetry).
    """
    theta = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    relative = np.ones_like(theta)
    relative += lopsidedness * rng.normal() * np.cos(theta + rng.uniform(0, 2 * np.pi))
    for k in range(2, harmonics + 1):
        amplitude = irregularity * rng.normal() / k**0.8
        relative += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(relative, 0.35, 1.8)
    x, y = r * np.cos(theta) * aspect, r * np.sin(theta)
    angle = rng.uniform(0, np.pi)
    rotated_x = x * np.cos(angle) - y * np.sin(angle)
    rotated_y = x * np.sin(angle) + y * np.cos(angle)
    return np.stack([rotated_x, rotated_y], axis=1) + centre


def fill_outline(size: int, outline: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """A (size, size) uint8 mask, 255 inside ``outline``, anti-aliased."""
    mask = np.zeros((size, size), dtype=np.uint8)
    points = np.round(outline * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return mask


def draw_curve(
    mask: npt.NDArray[np.uint8], points: npt.NDArray[np.float64], thickness: int
) -> None:
    """Draw an anti-aliased open polyline through (n, 2) x/y ``points`` into ``mask``."""
    scaled = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.polylines(
        mask, [scaled], False, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS
    )


def soften(mask: npt.NDArray[np.uint8], sigma: float) -> FloatImage:
    """A uint8 mask as float alpha in [0, 1], blurred by a Gaussian of ``sigma`` pixels."""
    alpha = mask.astype(np.float32) / 255.0
    if sigma < 0.5:
        return alpha
    size = alpha.shape[1], alpha.shape[0]
    if sigma >= 6.0:
        # Wide blurs are done at quarter size: the result is smooth anyway and 16x cheaper.
        small = cv2.resize(alpha, (size[0] // 4, size[1] // 4), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / 4.0)
        return cast("FloatImage", cv2.resize(small, size, interpolation=cv2.INTER_LINEAR))
    return cast("FloatImage", cv2.GaussianBlur(alpha, (0, 0), sigma))


def blend(canvas: Lab, alpha: FloatImage, colour: Lab) -> None:
    """Paint ``colour`` over ``canvas`` in place with per-pixel opacity ``alpha``."""
    # Lesion masks cover a small part of the frame: only touch their bounding box.
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    target = colour if colour.ndim == 1 else colour[window]
    region = canvas[window]
    region += alpha[window][..., None] * (target - region)


def quadratic_curve(
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    bend: float,
    points: int = 24,
) -> npt.NDArray[np.float64]:
    """Points on a quadratic Bezier from ``start`` to ``end``, bowed sideways by bend x length."""
    chord = end - start
    normal = np.array([-chord[1], chord[0]])
    control = (start + end) / 2.0 + bend * normal
    t = np.linspace(0.0, 1.0, points)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
