"""Per-image statistics the blinding audit compares between origins, computed on the pixels a
rater receives (decoded from the served file).

Encoding-chain signals (the same chain for every image should leave them alike):
- ``blockiness``: mean absolute luminance step across 8x8 block boundaries over the mean step
  inside blocks (horizontal and vertical). JPEG at a block grid raises it above 1.
- ``double_compression``: how jagged the histograms of the quantized low-frequency DCT
  coefficients are (mean absolute second difference of log counts over well-filled bins). A
  file quantized twice with different tables leaves periodic peaks and gaps there.

Content signals (what the image shows; a fair thing for raters to judge, reported only):
- ``sharpness``: variance of the luminance Laplacian.
- ``high_frequency``: share of the luminance spectrum's energy (mean removed) above half the
  Nyquist frequency.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy.fft import dctn

from fairskin.imaging.decode import ALLOWED_FORMATS

ENCODING_SIGNALS = ("blockiness", "double_compression")
CONTENT_SIGNALS = ("sharpness", "high_frequency")

# ITU-T T.81 Annex K luminance table, scaled as libjpeg (and Pillow) scale it for a quality.
_LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)
# The first nine AC coefficients in zigzag order: well populated in any photograph.
_LOW_AC = ((0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0))
_HISTOGRAM_BINS = 24
_MIN_BIN = 10

FloatArray = npt.NDArray[np.float64]


def luma_table(quality: int) -> FloatArray:
    """The luminance quantization steps libjpeg writes for ``quality`` (1-100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_LUMA_TABLE * scale + 50) / 100), 1, 255)


def decode_pixels(data: bytes) -> npt.NDArray[np.uint8]:
    """The RGB pixels of a served file."""
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def luminance(pixels: npt.NDArray[np.uint8]) -> FloatArray:
    """JPEG's (BT.601 full range) luma of an RGB array."""
    rgb = pixels.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def pixel_signals(pixels: npt.NDArray[np.uint8], quality: int) -> dict[str, float]:
    """Every signal above for one (h, w, 3) uint8 image; ``quality`` is the served JPEG step."""
    y = luminance(pixels)
    height, width = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    if height < 16 or width < 16:
        raise ValueError(f"image too small for block statistics ({y.shape[1]}x{y.shape[0]})")
    y = y[:height, :width]
    signals = {"blockiness": _blockiness(y)}
    signals["double_compression"] = _double_compression(y, luma_table(quality))
    signals["sharpness"] = _sharpness(y)
    signals["high_frequency"] = _high_frequency(y)
    return signals


def _blockiness(y: FloatArray) -> float:
    across = []
    inside = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        boundary = (np.arange(steps.shape[1]) % 8) == 7  # between columns 8k+7 and 8k+8
        across.append(steps[:, boundary].mean())
        inside.append(steps[:, ~boundary].mean())
    inner = float(np.mean(inside))
    return float(np.mean(across)) / inner if inner > 1e-9 else 1.0


def _double_compression(y: FloatArray, table: FloatArray) -> float:
    blocks = (y - 128.0).reshape(y.shape[0] // 8, 8, y.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    coefficients = dctn(blocks, axes=(2, 3), norm="ortho")  # JPEG's 8x8 DCT-II
    jaggedness = []
    for u, v in _LOW_AC:
        scaled = coefficients[:, :, u, v].ravel() / table[u, v]
        levels = np.abs(np.round(scaled)).astype(np.int64)
        counts = np.bincount(levels[levels <= _HISTOGRAM_BINS], minlength=_HISTOGRAM_BINS + 1)
        # A photograph's histogram falls off about exponentially, a straight line in log: the
        # second difference of log counts measures the peaks and gaps a second quantization
        # leaves, not how spread the content is.
        logs = np.log(counts[1:].astype(np.float64) + 1.0)
        curvature = np.abs(logs[1:-1] - (logs[:-2] + logs[2:]) / 2)
        # A bin is judged by its neighbours' counts, so the empty bins double quantization
        # leaves are counted, not skipped.
        enough = (counts[1:-2] >= _MIN_BIN) & (counts[3:] >= _MIN_BIN)
        if enough.any():
            jaggedness.append(float(curvature[enough].mean()))
    return float(np.mean(jaggedness)) if jaggedness else 0.0


def _sharpness(y: FloatArray) -> float:
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(laplacian.var())


def _high_frequency(y: FloatArray) -> float:
    spectrum = np.abs(np.fft.rfft2(y - y.mean())) ** 2
    fy = np.abs(np.fft.fftfreq(y.shape[0]))[:, None]
    fx = np.fft.rfftfreq(y.shape[1])[None, :]
    total = float(spectrum.sum())
    if total <= 1e-12:
        return 0.0
    return float(spectrum[np.maximum(fy, fx) > 0.25].sum() / total)
