"""The one place pixels change representation: 8-bit arrays and tensors, and the model's float range.

The model works on (B, 3, H, W) floats in [-0.5, 0.5] (gray = 0); images and the
decoder's output are 8-bit levels, rounded exactly as the decoder rounds them.
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-0.5, 0.5] (gray = 0), the model's range."""
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 255 - 0.5  # a copy: input may be read-only


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-0.5, 0.5] floats -> rounded 8-bit levels, as the decoder outputs them."""
    return ((x + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """8-bit levels -> the model's [-0.5, 0.5] floats."""
    return x.float() / 255 - 0.5


def to_array(x: torch.Tensor) -> np.ndarray:
    """The first image of a (B, 3, H, W) uint8 tensor as an (H, W, 3) array (a view where it can be)."""
    return x[0].permute(1, 2, 0).numpy()


def unshuffled_channels_last(x: torch.Tensor, s: int) -> torch.Tensor:
    """``F.pixel_unshuffle(x, s)`` laid out channels-last (oneDNN's convolutions and the
    channel norm run faster on it) in one copy instead of two: the same values and strides,
    in a third to a tenth of the time."""
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5)
    return blocks.reshape(b, h // s, w // s, c * s * s).permute(0, 3, 1, 2)
