"""The context model of the index maps: integer frequencies that adapt while coding.

One layer of one tile is coded row by row, each row in two halves: the even columns
(whose neighbours above are known), then the odd columns (whose left and right
neighbours are known too). Each half-row is one vectorised step, so decoding costs two
small numpy steps per row, not one Python call per symbol.

A cell's frequencies come from
- its *context*, one of CONTEXTS classes: how many of its known neighbours (up,
  up-left, up-right, left, right) chose "keep" (symbol 0), capped at 3, and whether the
  co-located cell of the layer before chose "keep" (flat areas keep in runs, coarse to
  fine as well as across);
- the counts of that context, started from the model's table for the rung's table set
  (``Priors``) and raised by COUNT_INCREMENT for every symbol coded in it, so the odds follow
  the image;
- a bonus of 1/2**BONUS_SHIFT of the total for each symbol that a direct neighbour (up,
  left, right) chose, since neighbours often pick the same node.

Everything here is integer arithmetic on symbols; the coder's probabilities are these
integers divided by their sum in float64, so encoder and decoder agree on any machine
whatever the network's floats did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

CONTEXTS = 8
COUNT_INCREMENT = 16  # count added per coded symbol
INIT_TOTAL = 2048  # a context's initial table sums to this: worth INIT_TOTAL / COUNT_INCREMENT = 128 symbols
BONUS_SHIFT = 3
MAX_TOTAL = 1 << 16  # a context's counts are halved above this total
NONE = -1  # a neighbour outside the tile, or not yet coded
SYMBOL = np.int16  # index grids at rest (K <= model.MAX_K = 4096); int64 would take 165 MB over a 100 MP walk


def parent_positions(count: int, cell: int, previous_cell: int, previous_count: int) -> np.ndarray:
    """Along one axis: for each of ``count`` cells of size ``cell``, the index of the cell
    of the layer before (size ``previous_cell``, ``previous_count`` of them) that holds its
    first pixel. The one definition of "co-located", shared by the coder's contexts and
    the encoder's pricing."""
    return np.minimum(np.arange(count) * cell // previous_cell, previous_count - 1)


def parent_grid(previous: np.ndarray | None, previous_cell: int, cell: int, shape: tuple[int, int]) -> np.ndarray:
    """The symbol of the layer before at each cell of this layer (NONE for the first layer)."""
    if previous is None:
        return np.full(shape, NONE, dtype=np.int64)
    rows = parent_positions(shape[0], cell, previous_cell, previous.shape[0])
    cols = parent_positions(shape[1], cell, previous_cell, previous.shape[1])
    return previous[rows[:, None], cols[None, :]].astype(np.int64)


@dataclass
class HalfRow:
    """One half-row: the cells of row ``row`` with columns ``columns``, their context
    classes and their direct neighbours' symbols (NONE where unknown)."""

    row: int
    columns: np.ndarray
    context: np.ndarray
    neighbours: tuple[np.ndarray, ...]


def half_rows(grid: np.ndarray, parent: np.ndarray) -> Iterator[HalfRow]:
    """Walk one tile's grid in coding order. ``grid`` (H, W) must hold the symbols of every
    half-row already taken when the next one is drawn: the decoder writes each half-row's symbols
    into it before advancing."""
    height, width = grid.shape
    padded = np.full((height + 1, width + 2), NONE, dtype=np.int64)
    for row in range(height):
        if row:
            padded[row, 1:-1] = grid[row - 1]
        for phase in (0, 1):
            columns = np.arange(phase, width, 2)
            up, up_left, up_right = padded[row, columns + 1], padded[row, columns], padded[row, columns + 2]
            if phase:
                left = grid[row, columns - 1].astype(np.int64)
                right = np.full_like(columns, NONE)
                inside = columns + 1 < width
                right[inside] = grid[row, columns[inside] + 1]
            else:
                left = right = np.full_like(columns, NONE)
            keeps = sum((n == 0).astype(np.int64) for n in (up, up_left, up_right, left, right))
            context = np.minimum(keeps, 3) * 2 + (parent[row, columns] == 0)
            yield HalfRow(row, columns, context, (up, left, right))


def frequencies(counts: np.ndarray, half: HalfRow) -> np.ndarray:
    """(cells, K) positive int64 frequencies of one half-row, from ``counts`` (CONTEXTS, K)."""
    freq = counts[half.context]
    bonus = freq.sum(1) >> BONUS_SHIFT
    cells = np.arange(half.columns.size)
    for n in half.neighbours:
        known = n >= 0  # cells are distinct within one neighbour array, so += adds once each
        freq[cells[known], n[known]] += bonus[known]
    return freq


def code_layer(
    initial: np.ndarray,
    grids: list[np.ndarray],
    parents: list[np.ndarray],
    symbols_for: Callable[[int, HalfRow, np.ndarray], np.ndarray],
) -> None:
    """Run the adaptive model over one layer's tiles in stream order. For each half-row,
    ``symbols_for(tile, half, frequencies)`` returns that half-row's symbols: the encoder
    reads them from its grid, the decoder decodes them; they are written into
    ``grids[tile]`` and counted. ``initial`` (CONTEXTS, K) is the layer's table; counts
    carry from tile to tile and are halved once a context's total passes MAX_TOTAL, so
    the odds follow the image locally and no probability falls below ~1e-5."""
    counts = initial.astype(np.int64)  # a copy: the model's table is never changed
    k = counts.shape[1]
    for tile, (grid, parent) in enumerate(zip(grids, parents, strict=True)):
        for half in half_rows(grid, parent):
            symbols = symbols_for(tile, half, frequencies(counts, half))
            grid[half.row, half.columns] = symbols
            adapt(counts, _tally(half.context, symbols, k), COUNT_INCREMENT)


def adapt(counts: np.ndarray, tally: np.ndarray, increment: int) -> None:
    """Add ``increment`` per coded symbol of ``tally`` to ``counts`` (classes, K) in place, then
    halve, rounding up, every class whose total passed MAX_TOTAL: the odds follow the
    image locally, and no count reaches zero. Shared by every adaptive model of the format."""
    counts += increment * tally
    full = counts.sum(1) > MAX_TOTAL
    if full.any():
        counts[full] = (counts[full] + 1) >> 1


DIRECT = 3  # direct neighbours (up, left, right) that can give a bonus


def static_lengths(table: np.ndarray) -> np.ndarray:
    """(CONTEXTS, DIRECT + 1, DIRECT + 1, K) code lengths in bits of each symbol under the
    initial ``table`` (CONTEXTS, K), by context class, number of known direct neighbours
    and how many of them chose the symbol: ``frequencies`` before any count adapts."""
    t = table.astype(np.float64)
    total = t.sum(1)
    bonus = (table.sum(1) >> BONUS_SHIFT).astype(np.float64)
    known = np.arange(DIRECT + 1)
    freq = t[:, None, None, :] + (bonus[:, None] * known)[:, None, :, None]  # [c, -, same, k]
    totals = total[:, None] + bonus[:, None] * known  # [c, known]
    return -np.log2(freq / totals[:, :, None, None])


def code_lengths(grid: np.ndarray, parent_kept: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per cell, the bits a whole grid's symbols (B, H, W) cost under ``static_lengths``,
    each cell's context taken as ``half_rows`` forms it (neighbours above, and left and
    right in odd columns; ``parent_kept`` (B, H, W) 0/1): what an encoder can price a
    choice with once it has a draft of the whole layer. ``lengths`` is one table's
    (CONTEXTS, 4, 4, K) or one per image (B, CONTEXTS, 4, 4, K)."""
    b, height, width = grid.shape
    padded = np.full((b, height + 1, width + 2), NONE, dtype=np.int64)
    padded[:, 1:, 1:-1] = grid
    up, up_left, up_right = padded[:, :-1, 1:-1], padded[:, :-1, :-2], padded[:, :-1, 2:]
    odd = (np.arange(width) % 2 == 1)[None, None, :]
    left = np.where(odd, padded[:, 1:, :-2], NONE)
    right = np.where(odd, padded[:, 1:, 2:], NONE)
    keeps = sum((n == 0).astype(np.int64) for n in (up, up_left, up_right, left, right))
    context = np.minimum(keeps, 3) * 2 + parent_kept
    direct = (up, left, right)
    known = sum((n >= 0).astype(np.int64) for n in direct)
    same = sum((n == grid).astype(np.int64) for n in direct)
    if lengths.ndim == 4:
        return lengths[context, known, same, grid]
    return lengths[np.arange(b)[:, None, None], context, known, same, grid]


def count_contexts(grid: np.ndarray, parent: np.ndarray, k: int) -> np.ndarray:
    """(CONTEXTS, K) tally of the symbols of a complete grid by context: for fitting tables."""
    tally = np.zeros((CONTEXTS, k), dtype=np.int64)
    for half in half_rows(grid, parent):
        tally += _tally(half.context, grid[half.row, half.columns], k)
    return tally


def _tally(context: np.ndarray, symbols: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(context * k + symbols, minlength=CONTEXTS * k).reshape(CONTEXTS, k)
