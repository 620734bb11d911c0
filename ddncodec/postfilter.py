"""The learned post-filter: a small residual CNN that runs on the decoded 8-bit image,
after the index replay, to soften the cell mosaic and recover detail the indices imply.

It reads the decoded pixels and, when its config names the model's cell sizes, where
the mosaic is: per layer, which cells were refined (symbol ≠ keep), and where the cell
borders of every size lie (as a deblocking filter reads a codec's boundary strengths).
Both come from the index maps the decoder already holds; it never touches the entropy
coder's state, so it cannot desynchronise decoding. The encoder runs it too, so the
reconstruction it reports is what decode returns. It works at quarter resolution
(pixel-unshuffle by 4: 48 channels), where a 64-channel trunk costs ~0.1 s per Kodak
image on one CPU thread and each 3×3 conv sees 12 px of context.

The same network, configured with ``cells=(8,)`` and ``step=True``, is the detail filter:
it runs after the detail layer (``detail``), reading which 8×8 blocks that layer coded,
their borders and the quantiser step, as a deblocking filter after a transform coder.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ddncodec.tensors import unshuffled_channels_last

SCALE = 4  # px per trunk position; images are padded to a multiple of the DDN unit (32) already
PACKED = 3 * SCALE * SCALE  # pixel channels after the pixel-unshuffle by SCALE
FLOAT32_ENV = "DDNCODEC_FLOAT32"  # set to 1: the filters run in float32 on any CPU


@functools.cache
def bfloat16_native() -> bool:
    """Whether the filters' convolutions run in bfloat16 (in training too): on a CPU with
    bfloat16 dot products in hardware (AVX-512 BF16; every AMX CPU has it), where oneDNN runs
    them 2-3x faster than in float32 for under 0.01 dB, unless FLOAT32_ENV is set; elsewhere
    in float32, as bfloat16 there would be emulated. A file decodes to the same pixels on
    the same kind of CPU; across kinds, a filtered pixel may differ by a level or two."""
    if os.environ.get(FLOAT32_ENV, "") not in ("", "0"):
        return False
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private: absent, the safe answer is no
    return bool(native and native())


@dataclass(frozen=True)
class FilterConfig:
    channels: int = 64
    blocks: int = 4  # residual blocks of two 3×3 convs each
    # The model's cell size per layer: the filter then reads the refined cells and the cell
    # borders beside the pixels. () = pixels only.
    cells: tuple[int, ...] = ()
    step: bool = False  # also reads a quantiser step (log step / 5, one constant channel)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))
        if not isinstance(self.step, bool) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.channels, self.blocks, *self.cells)
        ):
            msg = f"post-filter config needs integers, got {self}"
            raise ValueError(msg)
        if not (1 <= self.channels <= 256 and 0 <= self.blocks <= 32 and len(self.cells) <= 64):
            msg = f"post-filter config out of range (channels 1..256, blocks 0..32, at most 64 cells): {self}"
            raise ValueError(msg)
        if any(c < SCALE or c % SCALE or c > 1024 for c in self.cells):
            msg = f"post-filter cell sizes must be multiples of {SCALE} up to 1024: {self.cells}"
            raise ValueError(msg)

    @property
    def borders(self) -> tuple[int, ...]:
        """Cell sizes whose borders fall between trunk positions (larger than SCALE)."""
        return tuple(sorted({c for c in self.cells if c > SCALE}))

    @property
    def side_channels(self) -> int:
        return len(self.cells) + 2 * len(self.borders) + self.step

    def to_json(self) -> str:
        """A filter's JSON leaves out the side inputs it lacks (``cells``, ``step``): it (and
        the fingerprint of a model that carries it) reads as before they existed."""
        fields = dataclasses.asdict(self)
        for name in ("cells", "step"):
            if not fields[name]:
                del fields[name]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FilterConfig:
        return cls(**json.loads(text))


def refined_flags(indices: list[torch.Tensor], cells: tuple[int, ...], size: tuple[int, int]) -> torch.Tensor:
    """Per layer of ``cells``, 1 where the cell took a candidate (symbol ≠ 0), at quarter
    resolution: (B, len(cells), H/4, W/4) uint8. ``indices`` holds the (B, rows, cols)
    maps of the layers decoded so far; the layers after them are all "kept"."""
    height, width = size[0] // SCALE, size[1] // SCALE
    batch = indices[0].shape[0] if indices else 1
    flags = torch.zeros(batch, len(cells), height, width, dtype=torch.uint8)
    for layer, idx in enumerate(indices[: len(cells)]):
        grow = cells[layer] // SCALE
        refined = (idx != 0).to(torch.uint8).repeat_interleave(grow, 1).repeat_interleave(grow, 2)
        flags[:, layer] = refined[:, :height, :width]
    return flags


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
    """image (B, 3, H, W) in [-0.5, 0.5], H and W multiples of SCALE, whose cell grid starts
    at the top-left corner -> filtered image. With ``config.cells`` it also takes the
    ``refined_flags`` of the decode."""

    def __init__(self, config: FilterConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Conv2d(PACKED + config.side_channels, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[_Block(config.channels) for _ in range(config.blocks)])
        self.out = nn.Conv2d(config.channels, PACKED, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # an untrained filter changes nothing
        nn.init.zeros_(self.out.bias)

    def _side(
        self, flags: torch.Tensor | None, step: int | torch.Tensor | None, like: torch.Tensor
    ) -> list[torch.Tensor]:
        """The refined flags, per border size 1 on the trunk rows / columns that start a cell,
        then the step."""
        b, _, height, width = like.shape
        if self.config.step and step is None:
            msg = "this filter needs the quantiser step"
            raise ValueError(msg)
        tail = []
        if self.config.step:
            level = torch.as_tensor(step, dtype=like.dtype).log().div(5).reshape(-1, 1, 1, 1)
            tail = [level.expand(b, 1, height, width)]
        if not self.config.cells:
            return tail
        if flags is None or flags.shape != (b, len(self.config.cells), height, width):
            msg = f"this post-filter needs refined flags of shape {(b, len(self.config.cells), height, width)}"
            raise ValueError(msg)
        side = [flags.to(like.dtype)]
        for cell in self.config.borders:
            stride = cell // SCALE
            rows = (torch.arange(height) % stride == 0).to(like.dtype).view(1, 1, height, 1).expand(b, 1, height, width)
            cols = (torch.arange(width) % stride == 0).to(like.dtype).view(1, 1, 1, width).expand(b, 1, height, width)
            side += [rows, cols]
        return side + tail

    def forward(
        self, x: torch.Tensor, flags: torch.Tensor | None = None, step: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """With ``config.step``: ``step`` is one quantiser step, or one per image (B,)."""
        packed = unshuffled_channels_last(x, SCALE)
        inputs = [packed, *self._side(flags, step, packed)]
        stacked = torch.cat([t.permute(0, 2, 3, 1) for t in inputs], 3).permute(0, 3, 1, 2)  # channels-last, one copy
        # The trunk in bfloat16 where the CPU has it: it computes a residual of a few levels,
        # which its 8-bit mantissa moves by a tenth of a level on average.
        with torch.autocast("cpu", torch.bfloat16, enabled=bfloat16_native()):
            residual = self.out(F.silu(self.blocks(F.silu(self.embed(stacked)))))
        return x + F.pixel_shuffle(residual.float(), SCALE)

    def widen_from(self, state: dict[str, torch.Tensor]) -> None:
        """Start from a filter of the same width with fewer side inputs (pixels only, or the
        refined flags of fewer layers beside the same cell borders, as for a grown model) or
        fewer blocks: its weights, zero weight on the new inputs, the new blocks as the
        identity they start as, so this filter starts out computing what that one did."""
        state = dict(state)
        old = state["embed.weight"]
        if old.shape[1] < self.embed.weight.shape[1]:
            pixels, cells = PACKED, len(self.config.cells)
            side = old.shape[1] - pixels
            flags = side - 2 * len(self.config.borders) if side else 0  # the old filter's layers
            if side and not 0 < flags <= cells:
                msg = f"the filter to start from reads {side} side inputs, which this one cannot extend"
                raise ValueError(msg)
            grown = torch.zeros_like(self.embed.weight)
            grown[:, : pixels + flags] = old[:, : pixels + flags]  # pixels, then the first layers' flags
            grown[:, pixels + cells : pixels + cells + side - flags] = old[:, pixels + flags :]  # the borders
            state["embed.weight"] = grown
        own = self.state_dict()
        new_blocks = {name for name in own if name.startswith("blocks.") and name not in state}
        if set(state) - set(own):
            msg = f"the filter to start from has more blocks than this one ({sorted(set(state) - set(own))[:2]} ...)"
            raise ValueError(msg)
        state |= {name: own[name] for name in new_blocks}
        self.load_state_dict(state)
