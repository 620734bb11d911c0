"""Image quality as the learned-compression literature reports it (CompressAI's
conventions), so same-run numbers sit on the same axes as the published curves. PSNR is
the codec's own, ``ddncodec.codec.psnr`` (MSE over every H·W·3 value, inf if identical)."""

from __future__ import annotations

import math

import numpy as np

MS_SSIM_MIN_SIDE = 161  # pytorch-msssim's 5 scales of an 11 px window need a side > 160 px


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of the whole file over the original (unpadded) image."""
    return 8 * num_bytes / (width * height)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float | None:
    """pytorch-msssim's MS-SSIM (data_range 255, default window) of two uint8 RGB images;
    None for images too small for its five scales."""
    if min(reference.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    import torch  # here, so that reports can be written without loading torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = (torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() for x in (reference, decoded))
    return float(_ms_ssim(a, b, data_range=255, size_average=True))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on CompressAI's dB scale, -10·log10(1 - MS-SSIM)."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)
