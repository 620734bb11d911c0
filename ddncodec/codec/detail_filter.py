"""The model's detail filter over a whole image, piece by piece in bounded memory.

It runs after the detail layer (q3-q8) and reads which 8×8 blocks that layer coded.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ddncodec import detail, imageio
from ddncodec.codec import workers
from ddncodec.codec.tiles import plan
from ddncodec.modelfile import CodecModel
from ddncodec.postfilter import SCALE, FilterConfig, refined_flags
from ddncodec.tensors import to_array, to_tensor, to_uint8

DETAIL_STRIP = 512  # rows and columns (whole 8 px blocks) filtered at once: bounded memory on any image
DETAIL_MARGIN = 64  # px of context on each side of a piece, at least: the shipped filter reaches 56 (``reach``)


def reach(config: FilterConfig) -> int:
    """How far (px) the filter's output at a pixel reads: one 3×3 convolution at SCALE px for
    the embedding, two per residual block, one for the output."""
    return (2 * config.blocks + 2) * SCALE


def margin(config: FilterConfig) -> int:
    """Context on each side of a piece: DETAIL_MARGIN, or more for a filter that reaches further,
    in whole blocks (the coded-block flags are cut on block bounds)."""
    return max(DETAIL_MARGIN, -(-reach(config) // detail.BLOCK) * detail.BLOCK)


def detail_filtered(model: CodecModel, pixels: np.ndarray, coded_blocks: np.ndarray, step: int) -> np.ndarray:
    """(H, W, 3) uint8 ``pixels``, a decode with its detail layer at ``step``, through the
    model's detail filter, which also reads which 8×8 blocks that layer coded (``coded_blocks``,
    (block rows, block cols) bool: ``detail.coded_blocks``).
    Piece by piece of DETAIL_STRIP² px (every bound a multiple of the block), each with
    ``margin`` px of context around it, so the output is the whole image's."""
    net = model.detailfilter
    assert net is not None
    context = margin(net.config)
    height, width = pixels.shape[:2]
    padded = imageio.pad(pixels, detail.BLOCK)
    coded = torch.from_numpy(coded_blocks)[None]  # (1, block rows, block cols)
    out = np.empty_like(padded)
    rows, cols = padded.shape[:2]

    def filter_piece(corner: tuple[int, int]) -> None:
        (top, left), b = corner, detail.BLOCK
        r0, r1 = max(0, top - context), min(rows, top + DETAIL_STRIP + context)
        c0, c1 = max(0, left - context), min(cols, left + DETAIL_STRIP + context)
        x = to_tensor(padded[r0:r1, c0:c1][None])
        flags = refined_flags([coded[:, r0 // b : r1 // b, c0 // b : c1 // b]], net.config.cells, (r1 - r0, c1 - c0))
        piece = to_array(to_uint8(net(x, flags, step)))
        bottom, right = min(rows, top + DETAIL_STRIP), min(cols, left + DETAIL_STRIP)
        out[top:bottom, left:right] = piece[top - r0 : bottom - r0, left - c0 : right - c0]

    with workers.workers():
        workers.each(filter_piece, [(t, c) for t in range(0, rows, DETAIL_STRIP) for c in range(0, cols, DETAIL_STRIP)])
    return out[:height, :width]


def expect_work(model: CodecModel, width: int, height: int, tile_passes: int, detail_filtered: bool) -> None:
    """Tell ``progress`` how many tiles and pieces the running encode or decode will report:
    each tile ``tile_passes`` times, each piece of the detail filter once if it runs."""
    tiles = len(plan(width, height, model.config.unit))
    pieces = math.prod(-(-n // DETAIL_STRIP) for n in (width, height))  # DETAIL_STRIP is whole blocks
    workers.expect(tiles * tile_passes + pieces * detail_filtered)
