"""Smooth blocks: where the photo is a flat colour or a gentle ramp, the decoder paints a plane.

The DDN walk leaves a faint texture on flat colour that the detail layer pays dearly to
take out (a flat 500×500 colour cost 1,614 B at q5 with errors of 14 levels, a gray ramp
4,621 B at q8 with errors of 5). An 8×8 block whose pixels lie within TOLERANCE of a plane,
and whose plane continues a neighbour's (``_agreeing``: flat colour and ramps, not the odd
smooth patch of a photo, where a plane costs more than the detail layer would), is sent
instead as that plane, a mean and two slopes per channel in integers, and painted over
whatever the walk, the detail layer and the filters made of it: a flat colour comes back
exact, a ramp within a level. The encoder picks the blocks; the decoder only paints.

In the detail stream (format version 6) the planes come first, block row by block row:
each row's smooth flags (even block columns, then odd ones, by class of neighbours), then
whether each smooth block repeats the plane predicted from the block before, then the
planes of the others as differences from that prediction, under adaptive counts
(``context.adapt``; docs/FORMAT.md has the layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ddncodec import detail, entropy, levels
from ddncodec.context import adapt
from ddncodec.errors import FormatError

BLOCK = detail.BLOCK
PAINT_CHUNK = 4096  # blocks painted at once
SLOPE_LIMIT = 1023  # |slope| in 1/64 level per px: steeper blocks (16 levels per px) are not smooth
MEAN_LIMIT = 4 * 255
PARAMETERS = 3  # per channel: the mean in quarter levels, and the slopes across and down in 1/64 level per px
FLAG_CLASSES = 8  # even columns: smooth blocks among the 3 above (0-3); odd: among above, left, right (4-7)
_FLAG_INITIAL = np.array([[8, 8]] * FLAG_CLASSES, dtype=np.int64)
_HALVES = np.array([0.5, 0.5])  # the stream's first symbol: whether any block is smooth
_REPEAT_INITIAL = np.array([[8, 8]], dtype=np.int64)
TOLERANCE = 1  # levels: the encoder's largest error on a smooth block (beyond it, texture it keeps)
_PARAM_INITIAL = np.array(
    [4096 if v == 0 else max(1, 256 >> (2 * abs(v))) for v in range(-levels.LARGEST, levels.LARGEST + 1)] + [1]
)
"""A plane is most often its neighbour's (a flat colour, a steady ramp): a difference of 0 starts at p = 0.95."""
_ODD = np.arange(BLOCK) * 2 - (BLOCK - 1)  # -7, -5, ..., 7: twice a pixel's offset from the block centre
_SPREAD = BLOCK * int((_ODD**2).sum())  # the sum of _ODD² over a block's 64 pixels


@dataclass
class Planes:
    """The smooth blocks of an image: which blocks (rows, cols), and each one's plane,
    (count, 3 channels, PARAMETERS) in raster order."""

    smooth: np.ndarray
    params: np.ndarray

    @classmethod
    def none(cls, rows: int, cols: int) -> Planes:
        return cls(np.zeros((rows, cols), dtype=bool), np.zeros((0, 3, PARAMETERS), dtype=np.int64))


def _blocks(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (rows, cols, 8, 8, 3) float64, the last ones padded by repeating edges."""
    height, width = pixels.shape[:2]
    rows, cols = detail.blocks(height, width)
    padded = np.pad(pixels, ((0, rows * BLOCK - height), (0, cols * BLOCK - width), (0, 0)), mode="edge")
    return padded.reshape(rows, BLOCK, cols, BLOCK, 3).transpose(0, 2, 1, 3, 4).astype(np.float64)


def _painted(params: np.ndarray) -> np.ndarray:
    """(n, 3, PARAMETERS) planes -> (n, 8, 8, 3) uint8 pixels, integers only: 128 x value =
    32 x (4 x the mean) + slope_x x (2x - 7) + slope_y x (2y - 7), rounded. The precision
    keeps a rounded ramp within a level of itself."""
    p = params.astype(np.int64)[:, None, None, :, :]
    across, down = _ODD[None, None, :, None], _ODD[None, :, None, None]
    value = (32 * p[..., 0] + p[..., 1] * across + p[..., 2] * down + 64) >> 7
    return np.clip(value, 0, 255).astype(np.uint8)


def _fitted(blocks: np.ndarray) -> np.ndarray:
    """Least-squares planes of (n, 8, 8, 3) blocks as (n, 3, PARAMETERS) integers."""
    mean = blocks.mean((1, 2))
    across = (blocks * _ODD[None, None, :, None]).sum((1, 2)) / _SPREAD
    down = (blocks * _ODD[None, :, None, None]).sum((1, 2)) / _SPREAD
    return np.rint(np.stack([4 * mean, 128 * across, 128 * down], -1)).astype(np.int64)


def _curved(blocks: np.ndarray, tol: int) -> np.ndarray:
    """(n,) whether each of (n, 8, 8, 3) blocks bends more than a plane within ``tol`` can:
    a rounded plane's second differences are -1, 0 or 1, and an error of at most ``tol``
    adds at most 4 ``tol``. A cheap test that spares most blocks of a photo the fit. (A
    plane clipped at 0 or 255 bends: blocks that touch either level are never ruled out.)"""
    limit = 4 * tol + 1
    across = np.abs(blocks[:, :, 2:] - 2 * blocks[:, :, 1:-1] + blocks[:, :, :-2]).max((1, 2, 3))
    down = np.abs(blocks[:, 2:] - 2 * blocks[:, 1:-1] + blocks[:, :-2]).max((1, 2, 3))
    clipped = ((blocks == 0) | (blocks == 255)).any((1, 2, 3))
    return ((across > limit) | (down > limit)) & ~clipped


def find(
    image: np.ndarray, tol: int = TOLERANCE, band_rows: int = detail.BAND_ROWS, run: detail.Runner = detail.in_turn
) -> Planes:
    """The blocks of (H, W, 3) uint8 ``image`` that their plane reproduces within ``tol``
    levels on every pixel inside the image, a band of block rows at a time through ``run``."""
    height, width = image.shape[:2]
    rows, cols = detail.blocks(height, width)

    def band_planes(top: int) -> tuple[np.ndarray, np.ndarray]:
        band = slice(top, min(top + band_rows, rows))
        pixels = image[band.start * BLOCK : band.stop * BLOCK]
        blocks = _blocks(pixels).reshape(-1, BLOCK, BLOCK, 3)
        inside = np.zeros(((band.stop - band.start) * BLOCK, cols * BLOCK), dtype=bool)
        inside[: pixels.shape[0], :width] = True
        inside = inside.reshape(-1, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK, BLOCK, 1)
        whole = inside.all((1, 2, 3))
        candidates = np.flatnonzero(~(whole & _curved(blocks, tol)))
        fit = _fitted(blocks[candidates])
        error = np.abs(_painted(fit).astype(np.float64) - blocks[candidates]) * inside[candidates]
        ok = (error.max((1, 2, 3)) <= tol) & (np.abs(fit[..., 1:]).max((1, 2)) <= SLOPE_LIMIT)
        found = np.zeros(len(blocks), dtype=bool)
        found[candidates[ok]] = True
        return found.reshape(-1, cols), fit[ok]

    bands = run(band_planes, range(0, rows, band_rows))  # an image has at least one block row
    fits = np.concatenate([flags for flags, _ in bands])
    grid = np.zeros((rows, cols, 3, PARAMETERS), dtype=np.int32)
    grid[fits] = np.concatenate([fit for _, fit in bands])
    kept = _agreeing(fits, grid)
    return Planes(kept, grid[kept].astype(np.int64))


PAINTED_STEP = 255
"""The detail step an image of smooth blocks alone is written with at the rungs without a
detail layer: it quantises nothing (no block codes levels), the header only needs one."""


def whole(image: np.ndarray, run: detail.Runner = detail.in_turn) -> Planes | None:
    """``find``'s planes of (H, W, 3) uint8 ``image`` if every block is smooth, else None:
    its top band is tried first, so a photo costs a fraction of ``find``."""
    top = image[: detail.BAND_ROWS * BLOCK]
    planes = find(top, run=run)
    if planes.smooth.all() and len(top) < len(image):
        planes = find(image, run=run)
    return planes if planes.smooth.all() else None


def _agreeing(fits: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The blocks of ``fits`` (rows, cols) whose plane (``grid``: rows, cols, 3, PARAMETERS)
    continues a neighbour's: the same slopes, and a mean within a quarter level of the
    neighbour's carried on by its slope. Flat colour and ramps agree; a lone smooth block of a
    photo, whose plane would cost more bits than the detail layer spends on it, does not."""
    if fits.size == 1:  # an image of one block has no neighbour to agree with
        return fits
    mean, across, down = (grid[..., k].astype(np.int64) for k in range(PARAMETERS))

    def continues(here: tuple[slice, slice], there: tuple[slice, slice], slope: np.ndarray) -> np.ndarray:
        same_slopes = (across[here] == across[there]) & (down[here] == down[there])
        close = np.abs(mean[here] - mean[there] - (slope[there] >> 1)) <= 1
        return fits[here] & fits[there] & (same_slopes & close).all(-1)

    every = slice(None)
    left = continues((every, slice(1, None)), (every, slice(None, -1)), across)
    up = continues((slice(1, None), every), (slice(None, -1), every), down)
    agree = np.zeros_like(fits)
    agree[:, 1:] |= left
    agree[:, :-1] |= left
    agree[1:] |= up
    agree[:-1] |= up
    return agree


def paint(pixels: np.ndarray, planes: Planes) -> None:
    """Paint the smooth blocks' planes into (H, W, 3) uint8 ``pixels`` in place: the whole
    blocks at once through a block view of the image, those cut by its edges one by one."""
    height, width = pixels.shape[:2]
    whole_rows, whole_cols = height // BLOCK, width // BLOCK
    grid = pixels[: whole_rows * BLOCK, : whole_cols * BLOCK].reshape(whole_rows, BLOCK, whole_cols, BLOCK, 3)
    blocks = grid.transpose(0, 2, 1, 3, 4)  # a view: (rows, cols, 8, 8, 3)
    where = np.argwhere(planes.smooth)
    for start in range(0, len(where), PAINT_CHUNK):  # bounded memory: PAINT_CHUNK blocks of 192 bytes at once
        at = where[start : start + PAINT_CHUNK]
        painted = _painted(planes.params[start : start + PAINT_CHUNK])
        inside = (at[:, 0] < whole_rows) & (at[:, 1] < whole_cols)
        blocks[at[inside, 0], at[inside, 1]] = painted[inside]
        for (row, col), block in zip(at[~inside], painted[~inside], strict=True):
            top, left = row * BLOCK, col * BLOCK
            pixels[top : top + BLOCK, left : left + BLOCK] = block[: height - top, : width - left]


def painted_mask(planes: Planes, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    """(height, width) bool: the pixels of the region at (top, left), both whole blocks,
    that smooth blocks paint (a block cut by the image's edge counts whole)."""
    rows, cols = (-(-n // BLOCK) for n in size)
    flags = np.zeros((rows, cols), dtype=bool)
    inside = planes.smooth[top // BLOCK : top // BLOCK + rows, left // BLOCK : left // BLOCK + cols]
    flags[: inside.shape[0], : inside.shape[1]] = inside
    return np.repeat(np.repeat(flags, BLOCK, 0), BLOCK, 1)[: size[0], : size[1]]


def _phases(smooth: np.ndarray, row: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A block row's even columns, then its odd ones, each with its flags' classes from the
    flags known by then: ``smooth`` must hold the even columns' flags when the odd ones are
    drawn (the decoder writes them into it)."""
    cols = smooth.shape[1]
    above = np.pad(smooth[row - 1].astype(np.int64), 1) if row else np.zeros(cols + 2, dtype=np.int64)
    even = np.arange(0, cols, 2)
    yield even, above[even] + above[even + 1] + above[even + 2]
    odd = np.arange(1, cols, 2)
    if odd.size:
        here = np.pad(smooth[row].astype(np.int64), 1)
        yield odd, 4 + np.minimum(above[odd + 1] + here[odd] + here[odd + 2], 3)


BINARY_CHUNK = 64
"""Flags coded under one odds before their class's counts adapt: a class starts at even odds,
and a long row of flat colour should not pay a bit a block before it learns."""


def _put_binary(writer: entropy.Writer, counts: np.ndarray, classes: np.ndarray, bits: np.ndarray) -> None:
    """Binary ``bits`` (n,) of ``classes`` (n,), class by class in order, BINARY_CHUNK at a
    time, each chunk under its class's counts (C, 2), which then adapt."""
    for cls in np.unique(classes):
        part = bits[classes == cls]
        for start in range(0, part.size, BINARY_CHUNK):
            chunk = part[start : start + BINARY_CHUNK]
            writer.write(entropy.probabilities(counts[cls : cls + 1])[0], chunk)
            adapt(counts[cls : cls + 1], np.bincount(chunk, minlength=2)[None], levels.COUNT_INCREMENT)


def _get_binary(decoder: entropy.Decoder, counts: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``_put_binary``'s inverse: the bits (n,) of ``classes``."""
    bits = np.empty(classes.size, dtype=np.int64)
    for cls in np.unique(classes):
        where = np.flatnonzero(classes == cls)
        for start in range(0, where.size, BINARY_CHUNK):
            at = where[start : start + BINARY_CHUNK]
            bits[at] = decoder(entropy.probabilities(counts[cls : cls + 1])[0], at.size)
            adapt(counts[cls : cls + 1], np.bincount(bits[at], minlength=2)[None], levels.COUNT_INCREMENT)
    return bits


class _Counts:
    """The adaptive counts of the flags (by class), of whether a plane repeats the one before
    (as predicted: a flat colour, a steady ramp) and of the others' differences (by parameter)."""

    def __init__(self) -> None:
        self.flags = _FLAG_INITIAL.copy()
        self.repeats = _REPEAT_INITIAL.copy()
        self.params = np.tile(_PARAM_INITIAL, (PARAMETERS, 1))

    def count_params(self, symbols: np.ndarray) -> None:
        tally = np.bincount(_kinds(symbols.size) * levels.SYMBOLS + symbols, minlength=PARAMETERS * levels.SYMBOLS)
        adapt(self.params, tally.reshape(PARAMETERS, levels.SYMBOLS), levels.COUNT_INCREMENT)


def _kinds(size: int) -> np.ndarray:
    """Which parameter each of ``size`` flattened plane values is."""
    return np.arange(size) % PARAMETERS


def _run_on(smooth: np.ndarray) -> np.ndarray:
    """Per smooth block in raster order, whether the one before it is its left neighbour."""
    where = np.argwhere(smooth)
    return np.concatenate([[False], (where[1:, 0] == where[:-1, 0]) & (where[1:, 1] == where[:-1, 1] + 1)])


def _carried(slopes_across: np.ndarray, run_on: np.ndarray) -> np.ndarray:
    """(n, 3) what each block's mean is predicted to gain over the block before: the ramp of
    its left neighbour carried 8 px on (its slope x 8 px, in quarter levels), else 0."""
    gain = np.zeros_like(slopes_across)
    gain[1:] = (slopes_across[:-1] >> 1) * run_on[1:, None]
    return gain


def _differences(planes: Planes) -> np.ndarray:
    """(n, 3 x PARAMETERS) each plane less the one before it in raster order, the mean less
    the left neighbour's ramp carried on (a steady ramp differs by nothing)."""
    params = planes.params.copy()
    params[..., 0] -= np.cumsum(_carried(params[..., 1], _run_on(planes.smooth)), axis=0)
    return np.diff(params.reshape(-1, 3 * PARAMETERS), axis=0, prepend=0)


def _planes(smooth: np.ndarray, differences: np.ndarray) -> np.ndarray:
    """``_differences``' inverse: (n, 3, PARAMETERS) planes."""
    params = np.cumsum(differences, axis=0).reshape(-1, 3, PARAMETERS)
    params[..., 0] += np.cumsum(_carried(params[..., 1], _run_on(smooth)), axis=0)
    return params


def write(planes: Planes, writer: entropy.Writer) -> None:
    """Code ``planes`` into ``writer`` (the detail stream, before its levels)."""
    any_smooth = bool(planes.params.size)
    writer.write(_HALVES, np.array([any_smooth]))
    if not any_smooth:
        return
    counts = _Counts()
    differences = _differences(planes)
    done = 0
    for row in range(planes.smooth.shape[0]):
        for at, classes in _phases(planes.smooth, row):
            _put_binary(writer, counts.flags, classes, planes.smooth[row, at].astype(np.int64))
        count = int(planes.smooth[row].sum())
        if not count:
            continue
        row_differences = differences[done : done + count]
        done += count
        repeats = (~row_differences.any(1)).astype(np.int64)
        _put_binary(writer, counts.repeats, np.zeros(count, dtype=np.int64), repeats)
        values = row_differences[repeats == 0].ravel()
        if not values.size:
            continue
        symbols = levels.symbols(values)
        order = np.argsort(_kinds(values.size), kind="stable")
        writer.runs(
            entropy.probabilities(counts.params), np.full(PARAMETERS, values.size // PARAMETERS), symbols[order]
        )
        escaped = values[symbols == levels.ESCAPE]
        if escaped.size:
            writer.write(levels.UNIFORM, levels.payload(escaped))
        counts.count_params(symbols)


def read(decoder: entropy.Decoder, rows: int, cols: int) -> Planes:
    """``write``'s inverse: the planes of an image of (rows, cols) blocks."""
    if not decoder(_HALVES, 1)[0]:
        return Planes.none(rows, cols)
    counts = _Counts()
    smooth = np.zeros((rows, cols), dtype=bool)
    differences = []
    for row in range(rows):
        for at, classes in _phases(smooth, row):
            smooth[row, at] = _get_binary(decoder, counts.flags, classes).astype(bool)
        count = int(smooth[row].sum())
        if not count:
            continue
        repeats = _get_binary(decoder, counts.repeats, np.zeros(count, dtype=np.int64))
        row_differences = np.zeros((count, 3 * PARAMETERS), dtype=np.int64)
        differences.append(row_differences)
        fresh = np.flatnonzero(repeats == 0)
        if not fresh.size:
            continue
        size = fresh.size * 3 * PARAMETERS
        symbols = np.empty(size, dtype=np.int64)
        symbols[np.argsort(_kinds(size), kind="stable")] = decoder.runs(
            entropy.probabilities(counts.params), np.full(PARAMETERS, size // PARAMETERS)
        )
        values = symbols - levels.LARGEST
        escaped = symbols == levels.ESCAPE
        if escaped.any():
            values[escaped] = levels.from_payload(decoder(levels.UNIFORM, 2 * int(escaped.sum())))
        row_differences[fresh] = values.reshape(fresh.size, -1)
        counts.count_params(symbols)
    if not differences:
        return Planes.none(rows, cols)
    params = _planes(smooth, np.concatenate(differences))
    if (
        (np.abs(params[..., 1:]) > SLOPE_LIMIT).any()
        or (params[..., 0] < 0).any()
        or (params[..., 0] > MEAN_LIMIT).any()
    ):
        msg = "corrupt detail stream: a smooth block's plane is out of range"
        raise FormatError(msg)
    return Planes(smooth, params)
