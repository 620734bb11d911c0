"""Index maps, the codec's central value: the symbols a walk chose, and their streams.

image -> ``encoder.encode_maps`` -> IndexMaps -> ``write_maps`` -> streams -> ``read_maps``
-> IndexMaps -> ``decoder.decode_maps`` -> image. A cell's symbol is coded in the context
of its neighbours and of its co-located cell in the layer before (``layer_parents``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddncodec import container, entropy
from ddncodec.codec.tiles import Grids, Tile, cells, plan
from ddncodec.context import parent_grid
from ddncodec.errors import FormatError
from ddncodec.model import DDNConfig
from ddncodec.modelfile import CodecModel


@dataclass
class IndexMaps:
    """The symbols of a walk over a ``width`` × ``height`` image: per layer, per tile (in
    ``tiles.plan`` order), the (rows, columns) grid of chosen candidates; coded with the
    priors' table set ``table_set``."""

    width: int
    height: int
    table_set: int
    grids: Grids

    @property
    def layers(self) -> int:
        return len(self.grids)

    def tiles(self, model: CodecModel) -> list[Tile]:
        return plan(self.width, self.height, model.config.unit)


def layer_parents(config: DDNConfig, grids: Grids, layer: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per tile (or crop), the symbol of layer ``layer - 1`` (in ``grids``) co-located with
    each cell of ``layer``, whose grids have ``shapes``."""
    specs = config.layers
    previous = grids[layer - 1] if layer else [None] * len(shapes)
    return [
        parent_grid(p, specs[layer - 1].cell if layer else 0, specs[layer].cell, shape)
        for p, shape in zip(previous, shapes, strict=True)
    ]


def write_maps(maps: IndexMaps, model: CodecModel) -> list[bytes]:
    """Each layer's symbols of every tile, entropy-coded: one stream per layer."""
    grids = maps.grids
    return [
        entropy.encode(
            grids[layer],
            layer_parents(model.config, grids, layer, [g.shape for g in grids[layer]]),
            model.priors.initial(layer, maps.table_set),
        )
        for layer in range(maps.layers)
    ]


def read_maps(parsed: container.Container, model: CodecModel, count: int | None = None) -> IndexMaps:
    """Entropy-decode the index maps of a parsed file's first ``count`` layers (default:
    all present), for a model whose fingerprint it carries."""
    header = parsed.header
    if header.table_set >= model.priors.sets:
        msg = f"corrupt .ddn header: table set {header.table_set}, the model has {model.priors.sets}"
        raise FormatError(msg)
    tiles = plan(header.width, header.height, model.config.unit)
    grids: Grids = []
    for layer in range(len(parsed.streams) if count is None else count):
        shapes = [cells(t, model, layer) for t in tiles]
        parents = layer_parents(model.config, grids, layer, shapes)
        initial = model.priors.initial(layer, header.table_set)
        grids.append(entropy.decode(parsed.streams[layer], shapes, parents, initial))
    return IndexMaps(header.width, header.height, header.table_set, grids)
