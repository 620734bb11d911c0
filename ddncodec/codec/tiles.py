"""Tiles: an image cut into independent pieces of at most TILE px, and the generator walked over them.

Each tile is coded on its own, so memory stays bounded on any image and the tiles run
on the workers side by side; each layer's stream holds that layer's symbols of every
tile (layer-major), so a prefix of the file still decodes to the coarser image.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ddncodec.codec import workers
from ddncodec.context import SYMBOL
from ddncodec.model import Chooser
from ddncodec.modelfile import CodecModel
from ddncodec.postfilter import refined_flags
from ddncodec.tensors import from_uint8, to_array, to_uint8

TILE = 1024  # px: the largest tile side; part of the format

Grids = list[list[np.ndarray]]
"""Per layer, per tile (or crop), the (rows, columns) grid of the symbols chosen there."""


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int
    unit: int

    @property
    def padded(self) -> tuple[int, int]:
        return -(-self.height // self.unit) * self.unit, -(-self.width // self.unit) * self.unit


def _spans(length: int, unit: int) -> list[tuple[int, int]]:
    """Cut ``length`` px into near-equal spans of at most TILE px, each a multiple of
    ``unit`` but the last."""
    parts = -(-length // TILE)
    step = unit * -(-length // (parts * unit))
    return [(start, min(step, length - start)) for start in range(0, length, step)]


def plan(width: int, height: int, unit: int) -> list[Tile]:
    """The tiles of an image, in raster order (the order of their symbols in every stream)."""
    return [Tile(t, left, h, w, unit) for t, h in _spans(height, unit) for left, w in _spans(width, unit)]


def cells(tile: Tile, model: CodecModel, layer: int) -> tuple[int, int]:
    """The (rows, columns) of ``layer``'s cell grid over ``tile``."""
    cell = model.config.layers[layer].cell
    ph, pw = tile.padded
    return ph // cell, pw // cell


Kept = tuple[Tile, torch.Tensor, torch.Tensor]
"""A walked tile as the post-filter reads it: the tile, its padded pixels, its refined flags."""


@dataclass
class Walked:
    """The generator walked over every tile: the 8-bit image, the index grids,
    and per tile what the model's post-filter reads (none if the walk was not kept for it)."""

    image: np.ndarray  # (H, W, 3) uint8: the walk's image; once the encoder chose, the one the decoder makes
    grids: Grids
    kept: list[Kept] = field(default_factory=list)
    filtered: bool = False  # whether ``image`` is the post-filtered one (the encoder's choice)


class Filtering(enum.Enum):
    """What a walk does about the model's post-filter."""

    NONE = 0  # the plain image only
    LATER = 1  # keep each tile's pixels and flags for ``filtered`` (the encoder decides by PSNR)
    NOW = 2  # filter each tile as it is walked, into the image (the decoder: no tile kept)


def walk(
    model: CodecModel, tiles: list[Tile], layers: int, chooser_for: Callable[[int], Chooser], filtering: Filtering
) -> Walked:
    """Walk the generator over each tile with the chooser ``chooser_for(tile index)``,
    on the workers, doing ``filtering``."""
    height = max(t.top + t.height for t in tiles)
    width = max(t.left + t.width for t in tiles)
    canvas = np.empty((height, width, 3), dtype=np.uint8)

    def walk_tile(i: int) -> tuple[list[np.ndarray], Kept | None]:
        t, chosen = tiles[i], []
        image = torch.zeros(1, 3, *t.padded)  # gray: what a walk of no layers leaves
        for idx, x in model.network.walk((1, *t.padded), chooser_for(i), layers):
            image = x
            chosen.append(idx)
        pixels = to_uint8(image)
        grids = [idx[0].numpy().astype(SYMBOL) for idx in chosen]
        kept = None
        if filtering is Filtering.NONE:
            paste(canvas, t, pixels)
        else:
            kept = (t, pixels, refined_flags(chosen, model.postfilter.config.cells, t.padded))
            if filtering is Filtering.NOW:
                filter_tile(model, canvas, kept)
                kept = None
            else:
                paste(canvas, t, pixels)
        del image, chosen
        workers.release_freed(above=workers.RESIDENT_BUDGET)
        return grids, kept

    with workers.workers():
        walked = workers.each(walk_tile, range(len(tiles)))
    grids: Grids = [[tile_grids[layer] for tile_grids, _ in walked] for layer in range(layers)]
    return Walked(canvas, grids, [kept for _, kept in walked if kept is not None])


def filter_tile(model: CodecModel, canvas: np.ndarray, kept: Kept) -> None:
    """A walked tile (its padded pixels and refined flags) through the post-filter, onto ``canvas``."""
    assert model.postfilter is not None
    t, pixels, flags = kept
    paste(canvas, t, to_uint8(model.postfilter(from_uint8(pixels), flags)))


def post_filtered(model: CodecModel, walked: Walked) -> np.ndarray:
    """The walked image with the model's post-filter run on each kept padded tile."""
    smooth = np.empty_like(walked.image)
    with workers.workers():
        workers.each(lambda kept: filter_tile(model, smooth, kept), walked.kept)
    return smooth


def paste(canvas: np.ndarray, t: Tile, tile_pixels: torch.Tensor) -> None:
    """A padded tile's (1, 3, h, w) uint8 tensor into its place on the (H, W, 3) canvas."""
    canvas[t.top : t.top + t.height, t.left : t.left + t.width] = to_array(tile_pixels)[: t.height, : t.width]
