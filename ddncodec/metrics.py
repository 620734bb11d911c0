"""PSNR, the one way ddncodec measures a decode: exact, and in bounded memory on any image.

Squared errors of 8-bit levels are summed as integers in strips of PSNR_ROWS rows, so a
100-megapixel image needs no float copy and two runs always agree to the last bit; a
perfect match is ``math.inf`` everywhere. (scikit-image's ``peak_signal_noise_ratio``
converts both images to float64 first: 2.4 GB for a 100-megapixel pair; the tests check
this one against it.)
"""

from __future__ import annotations

import math

import numpy as np

from ddncodec import imageio

PSNR_ROWS = 256  # rows whose squared errors are summed at once: the sum is exact, the memory bounded
PEAK = 255


def decibels(squared: float, count: int = 1) -> float:
    """PSNR (dB) of ``count`` squared errors of 8-bit levels summing to ``squared`` (or of a
    mean squared error, ``count`` 1); ``math.inf`` for none."""
    return 10 * math.log10(PEAK**2 * count / squared) if squared > 0 else math.inf


def psnr(a: np.ndarray, b: np.ndarray, mode: str = "RGB") -> float:
    """PSNR (dB) of two (H, W, 3) uint8 images as the decoder outputs them; for mode "L",
    of their gray levels (the decoder returns a gray image's channel mean)."""
    if mode == "L":
        a, b = (np.asarray(imageio.from_pixels(x, "L"))[..., None] for x in (a, b))
    squared = 0
    for top in range(0, a.shape[0], PSNR_ROWS):
        difference = a[top : top + PSNR_ROWS].astype(np.int64) - b[top : top + PSNR_ROWS]
        squared += int(np.vdot(difference, difference))
    return decibels(squared, a.size)
