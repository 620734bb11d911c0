"""What every pool of decodes gives the training loop: windows to learn from, and the
held-out gain per rung (or per detail step) to measure by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ddncodec import metrics
from ddncodec.postfilter import PostFilter

ALIGN = 32  # px: windows start on the DDN unit, so cell and block grids sit as in a decode
POOL_CHUNK = 32  # crops (post-filter) or photos (detail filter) per pool file

Log = Callable[[dict], None]


@dataclass(frozen=True)
class Windows:
    """A training batch: decoded windows (B, 3, w, w) uint8, what the filter should make of
    them, its side inputs (B, L, w/4, w/4) and, for the detail filter, each one's step (B,)."""

    decoded: torch.Tensor
    target: torch.Tensor
    flags: torch.Tensor
    steps: torch.Tensor | None = None

    def mirrored(self) -> Windows:
        """Flipped left to right: a 32-aligned window's cell and block grids stay aligned."""
        return Windows(self.decoded.flip(-1), self.target.flip(-1), self.flags.flip(-1), self.steps)


class Pool(Protocol):
    """Decodes a filter learns from (``windows``) or is measured on (``validate``)."""

    def windows(self, batch: int, window: int) -> Windows: ...

    def validate(self, net: PostFilter) -> list[tuple[float, float]]: ...


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """``metrics.psnr`` of two uint8 tensors, for the validation log."""
    return metrics.psnr(a.cpu().numpy(), b.cpu().numpy())
