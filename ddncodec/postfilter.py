"""The learned post-filter: a small residual CNN that runs on the decoded 8-bit image,
after the index replay, to soften the cell mosaic and recover detail the indices imply.

It reads pixels only, never the entropy coder's state, so it cannot desynchronise
decoding; the encoder runs it too, so the reconstruction it reports is what decode
returns. It works at quarter resolution (pixel-unshuffle by 4: 48 channels), where a
64-channel trunk costs ~0.1 s per Kodak image on one CPU thread and each 3×3 conv sees
12 px of context.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SCALE = 4  # px per trunk position; images are padded to a multiple of the DDN unit (32) already


@dataclass(frozen=True)
class FilterConfig:
    channels: int = 64
    blocks: int = 4  # residual blocks of two 3×3 convs each

    def __post_init__(self) -> None:
        if not (isinstance(self.channels, int) and isinstance(self.blocks, int)):
            msg = f"post-filter config needs integers, got {self}"
            raise ValueError(msg)
        if not (1 <= self.channels <= 256 and 0 <= self.blocks <= 32):
            msg = f"post-filter config out of range (channels 1..256, blocks 0..32): {self}"
            raise ValueError(msg)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FilterConfig:
        return cls(**json.loads(text))


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class PostFilter(nn.Module):
    """image (B, 3, H, W) in [-0.5, 0.5], H and W multiples of SCALE -> filtered image."""

    def __init__(self, config: FilterConfig) -> None:
        super().__init__()
        self.config = config
        width = 3 * SCALE * SCALE
        self.embed = nn.Conv2d(width, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_Block(config.channels) for _ in range(config.blocks)])
        self.out = nn.Conv2d(config.channels, width, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # an untrained filter changes nothing
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.silu(self.embed(F.pixel_unshuffle(x, SCALE))))
        return x + F.pixel_shuffle(self.out(F.silu(h)), SCALE)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-0.5, 0.5] floats -> rounded 8-bit levels, as the decoder outputs them."""
    return ((x + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 - 0.5
