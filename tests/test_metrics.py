"""The one PSNR: exact integer sums in strips, checked against scikit-image's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from ddncodec import imageio, metrics


def test_psnr_is_scikit_images_over_strips_and_infinite_for_a_perfect_match() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (metrics.PSNR_ROWS * 2 + 37, 45, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert metrics.psnr(a, a) == math.inf and metrics.decibels(0) == math.inf
    assert metrics.decibels(1.0) == pytest.approx(20 * math.log10(255))


def test_a_gray_images_psnr_is_that_of_the_gray_levels_the_decoder_returns() -> None:
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    gray_a, gray_b = (np.asarray(imageio.from_pixels(x, "L")) for x in (a, b))
    assert metrics.psnr(a, b, "L") == pytest.approx(peak_signal_noise_ratio(gray_a, gray_b, data_range=255))
