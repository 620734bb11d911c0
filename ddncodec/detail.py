"""The detail layer: what the DDN's reconstruction still misses, transform-coded.

A 4 px cell that picks one of 16 candidates buys little per bit once the image is
already close: on 16 ``bsds500/val`` crops the DDN's own top rung reaches 36.2 dB at
3.6 bpp. Coding the residual of a 12-layer DDN reconstruction at 0.17 bpp with a
transform instead reaches 36.5 dB at 2.0 bpp. So the top rungs code a short DDN path and
then this layer:

    residual (image - decoded DDN pixels) -> orthonormal colour rotation -> 8x8 DCT-II
    per channel -> uniform quantiser (step in the header, dead zone on the encoder's side)
    -> integers, coded by the adaptive context model of ``levels``

Format version 9 on, each block's five lowest frequencies start from the smooth surface
the DCs around it describe (``surface``, what JPEG decoders call block smoothing, here part
of the format): the encoder quantises the DCs first and codes the rest of each block
against that prediction, which the decoder adds back.

Both transforms are orthonormal, so the quantiser's squared error is the pixels' squared
error. The pixel transforms run a band of BAND_ROWS block rows at a time, so their float
working set does not grow with the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ddncodec.levels import (
    BAND_OF,
    BANDS,
    BLOCK,
    LASTS,
    LEVEL,
    QUARTER,
    blocks,
    summarised_classes,
    summarised_lengths,
    symbols,
)

DEAD_ZONE = 0.1  # the encoder rounds |c| / step + 0.5 - DEAD_ZONE down: small coefficients go to 0
RATE_WEIGHT = 0.1  # optimise's price of a bit in squared steps (high-rate theory: 2 ln 2 / 12 ~ 0.12)
BAND_ROWS = 8  # block rows (64 px) the transforms and the quantiser work on at once

# Orthonormal colour rotation: luma-like sum, then two opponent axes.
_ROTATION = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
_ROTATION /= np.linalg.norm(_ROTATION, axis=1, keepdims=True)
_n = np.arange(BLOCK)
_DCT = np.sqrt(2 / BLOCK) * np.cos(np.pi * (2 * _n[None, :] + 1) * _n[:, None] / (2 * BLOCK))
_DCT[0] /= np.sqrt(2)
_DCT2 = np.kron(_DCT, _DCT)  # the 2-D DCT of a row-major 8x8 block as one 64x64 matrix


def _tiles(residual: np.ndarray) -> np.ndarray:
    """(H, W, 3) float residual -> (3, rows, cols, 64): colour-rotated, zero-padded to whole
    blocks, each block's pixels in row-major order."""
    height, width = residual.shape[:2]
    rows, cols = blocks(height, width)
    padded = np.zeros((rows * BLOCK, cols * BLOCK, 3))
    padded[:height, :width] = residual
    rotated = (padded @ _ROTATION.T).transpose(2, 0, 1)
    return rotated.reshape(3, rows, BLOCK, cols, BLOCK).transpose(0, 1, 3, 2, 4).reshape(3, rows, cols, BLOCK**2)


def forward(residual: np.ndarray) -> np.ndarray:
    """(H, W, 3) float residual -> (3, rows, cols, 64) coefficients (zero-padded to whole blocks)."""
    return _tiles(residual) @ _DCT2.T


def inverse(coefficients: np.ndarray, height: int, width: int) -> np.ndarray:
    """``forward``'s inverse, cropped to (height, width, 3)."""
    _, rows, cols, _ = coefficients.shape
    tiles = (coefficients @ _DCT2).reshape(3, rows, cols, BLOCK, BLOCK).transpose(0, 1, 3, 2, 4)
    return tiles.reshape(3, rows * BLOCK, cols * BLOCK).transpose(1, 2, 0)[:height, :width] @ _ROTATION


def block_dcs(residual: np.ndarray) -> np.ndarray:
    """(H, W, 3) float residual -> (3, rows, cols): ``forward``'s DC coefficients alone
    (the DC basis is 1/8 on every pixel), without the rest of the transform."""
    return _tiles(residual).sum(-1) / BLOCK


# The surface's weights by tone (luma, then chroma): slope, curvature and twist. Least squares
# on the detail residuals of 50 bsds500 training photos fits about these at every step from 8 to
# 170 (luma within 0.01; chroma's slope 0.15-0.20); letting each low frequency read all 24 DCs
# of the 5x5 blocks around it fitted no better (-2.27 % BD-rate against -2.31 %).
SURFACE = np.array([[0.14, 0.084, 0.018], [0.18, 0.065, 0.032]])
# Their coefficients, at u * 8 + v for the vertical frequency u and the horizontal one v:
_SLOPE_H, _SLOPE_V, _CURVE_H, _CURVE_V, _TWIST = 1, BLOCK, 2, 2 * BLOCK, BLOCK + 1


def surface(dcs: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The predicted coefficients (3, rows, cols, 64) of the middle block rows of ``dcs``
    (3, rows + 2, cols): DC coefficients with the block row above and below. Where
    ``known`` (rows + 2, cols) is False (past the image, a smooth block) a neighbour counts as
    the block itself, and such a block predicts nothing."""
    rows, cols = dcs.shape[1] - 2, dcs.shape[2]
    padded = np.pad(dcs, ((0, 0), (0, 0), (1, 1)))
    present = np.pad(known, ((0, 0), (1, 1)))
    centre = dcs[:, 1:-1]

    def at(dy: int, dx: int) -> np.ndarray:
        where = (slice(1 + dy, 1 + dy + rows), slice(1 + dx, 1 + dx + cols))
        return np.where(present[where], padded[(slice(None), *where)], centre)

    left, right, up, down = at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
    slope, curvature, twist = SURFACE[[0, 1, 1]].T[:, :, None, None]
    out = np.zeros((3, rows, cols, BLOCK * BLOCK))
    out[..., _SLOPE_H] = slope * (left - right)
    out[..., _SLOPE_V] = slope * (up - down)
    out[..., _CURVE_H] = curvature * (left + right - 2 * centre)
    out[..., _CURVE_V] = curvature * (up + down - 2 * centre)
    out[..., _TWIST] = twist * (at(-1, -1) - at(-1, 1) - at(1, -1) + at(1, 1))
    out[:, ~known[1:-1]] = 0
    return out


def band_surface(dc_levels: np.ndarray, step: int, band: slice, skip: np.ndarray | None = None) -> np.ndarray:
    """``surface`` for the block rows ``band`` of an image's DC levels (3, rows, cols)
    at ``step``, the smooth blocks of ``skip`` (rows, cols) not counted: reads the band
    and the block row on each side of it."""
    rows, cols = dc_levels.shape[1:]
    top, bottom = band.start - 1, min(band.stop, rows) + 1
    inside = slice(max(top, 0), min(bottom, rows))
    dcs = np.zeros((3, bottom - top, cols))
    known = np.zeros((bottom - top, cols), dtype=bool)
    window = slice(inside.start - top, inside.stop - top)
    dcs[:, window] = dc_levels[:, inside] * float(step)
    known[window] = True if skip is None else ~skip[inside]
    return surface(dcs, known)


def quantise(coefficients: np.ndarray, step: int) -> np.ndarray:
    """Integer levels of ``coefficients`` at ``step``, rounded towards zero by DEAD_ZONE
    (a small coefficient costs more bits than the error it removes)."""
    magnitude = np.floor(np.abs(coefficients) / step + 0.5 - DEAD_ZONE)
    return (np.sign(coefficients) * np.maximum(magnitude, 0)).astype(LEVEL)


def _bands(rows: int) -> Iterator[slice]:
    return (slice(top, min(top + BAND_ROWS, rows)) for top in range(0, rows, BAND_ROWS))


Runner = Callable[[Callable[[Any], Any], Sequence], list]
"""Runs a function over a list of bands or band numbers and returns the results in order
(``in_turn`` by default; the codec passes its workers')."""


def in_turn(work: Callable[[Any], Any], items: Sequence) -> list:
    """``work`` over ``items`` one after the other: a ``Runner``."""
    return [work(item) for item in items]


def apply(
    pixels: np.ndarray,
    levels: np.ndarray,
    step: int,
    out: np.ndarray | None = None,
    run: Runner = in_turn,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """Decoded DDN pixels (H, W, 3) uint8 with the detail of ``levels`` added as format
    version 9 adds it (low frequencies predicted from the DCs, the smooth blocks of ``skip``
    not counted), rounded to 8 bits, into ``out`` if given (``pixels`` itself, say: a decoder
    keeps no second image), band by band through ``run``. The decoder, which reads every
    version, adds band by band itself (``add_band``)."""
    out = np.empty_like(pixels) if out is None else out
    dc_levels = levels[..., 0]

    def add(band: slice) -> None:
        add_band(pixels, levels[:, band], band, step, out, band_surface(dc_levels, step, band, skip))

    run(add, list(_bands(levels.shape[1])))
    return out


def add_band(
    pixels: np.ndarray,
    band_levels: np.ndarray,
    band: slice,
    step: int,
    out: np.ndarray,
    prediction: np.ndarray | None = None,
) -> None:
    """``apply`` for one band of block rows ``band``, its levels (3, band rows, cols, 64)
    and the prediction ``band_surface`` gives them (None before format version 9)."""
    top, bottom = band.start * BLOCK, min(band.stop * BLOCK, pixels.shape[0])
    if not band_levels.any() and (prediction is None or not prediction.any()):  # the pixels as they are
        if out is not pixels:
            out[top:bottom] = pixels[top:bottom]
        return
    coefficients = band_levels.astype(np.float64) * step
    if prediction is not None:
        coefficients += prediction
    detail = inverse(coefficients, bottom - top, pixels.shape[1])
    out[top:bottom] = np.clip(np.round(pixels[top:bottom] + detail), 0, 255)


def coded_blocks(levels: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the blocks of (3, rows, cols, 64) ``levels`` with a nonzero level in
    any channel, what the detail filter reads of where this layer coded something."""
    return (levels != 0).any(axis=(0, 3))


def residual_levels(
    image: np.ndarray, decoded: np.ndarray, step: int, run: Runner = in_turn, skip: np.ndarray | None = None
) -> np.ndarray:
    """What the encoder codes: the levels of ``image`` minus ``decoded`` (both (H, W, 3) uint8),
    dead-zone quantised, then rate-distortion optimised level by level (``optimise``) and
    block by block (``truncate``), band by band through ``run``: the bands are independent
    once the class statistics are counted. Every block's low frequencies are coded against
    ``band_surface``'s prediction from the DCs around it, the DCs quantised first by the
    dead zone alone (where the RDO then moves a DC, the decoder predicts from the moved one:
    quantising them by a first pass of the RDO measured 0.14 % BD-rate better).
    The blocks of ``skip`` (rows, cols) stay zero (the smooth blocks, painted over)."""
    height, width = image.shape[:2]
    rows, cols = blocks(height, width)
    bands = list(_bands(rows))
    levels = np.empty((3, rows, cols, BLOCK**2), dtype=LEVEL)
    dc_levels = np.zeros((3, rows, cols), dtype=LEVEL)

    def residual(band: slice) -> np.ndarray:
        top, bottom = band.start * BLOCK, band.stop * BLOCK
        return image[top:bottom].astype(np.float64) - decoded[top:bottom]

    def dcs(band: slice) -> None:
        dc_levels[:, band] = quantise(block_dcs(residual(band)), step)

    run(dcs, bands)
    if skip is not None:
        dc_levels[:, skip] = 0

    def coefficients(band: slice) -> np.ndarray:
        return forward(residual(band)) - band_surface(dc_levels, step, band, skip)

    def quantised(band: slice) -> None:
        if skip is not None and skip[band].all():
            levels[:, band] = 0
            return
        levels[:, band] = quantise(coefficients(band), step)
        if skip is not None:
            levels[:, band][:, skip[band]] = 0

    run(quantised, bands)

    # Both choices are priced by the dead-zone levels' statistics, and read the dead-zone
    # row above each band (kept before it changes), so the bands stay independent.
    level_bits, last_bits = summarised_lengths(levels, step, skip)
    above = [None] + [levels[:, band.stop - 1].copy() for band in bands[:-1]]

    def optimised(i: int) -> None:
        band = bands[i]
        if not levels[:, band].any():
            return
        plain, values = levels[:, band].copy(), coefficients(band)
        chosen = optimise(values, plain, step, level_bits, summarised_classes(plain, above[i])[2])
        if skip is not None:  # rounding may reach past the dead zone: the smooth blocks stay zero
            chosen[:, skip[band]] = 0
        levels[:, band] = truncate(values, chosen, step, level_bits, last_bits, above[i])

    run(optimised, range(len(bands)))
    return levels


def truncate(
    coefficients: np.ndarray,
    levels: np.ndarray,
    step: int,
    level_bits: np.ndarray,
    last_bits: np.ndarray,
    above: np.ndarray | None,
) -> np.ndarray:
    """Each block's last band chosen by rate and distortion: ending a block lower zeroes
    every level from that band on, for the squared error it adds (in steps²) against
    RATE_WEIGHT per bit it saves, the bits priced in format version 11's classes by
    ``level_bits`` and ``last_bits`` (``levels.summarised_lengths``). A band of
    (3, rows, cols, 64) ``levels``, ``above`` its block row above (None at the top). On 17
    ``bsds500/val`` photos, with ``optimise`` priced in the same classes: -2.9 % BD-rate."""
    lasts, summary, classes = summarised_classes(levels, above)
    busy = np.flatnonzero(lasts)  # only a block that holds a level has an end to choose
    if not busy.size:
        return levels
    flat = levels.reshape(-1, BLOCK * BLOCK)[busy]
    ends = lasts.reshape(-1)[busy]
    # The error each level adds if zeroed, s² - (s - |l|)² = |l| (2 s - |l|) for s = |c| / step,
    # in place: a band's float arrays are the RDO's largest.
    added = np.abs(coefficients.reshape(-1, BLOCK * BLOCK)[busy])
    added *= 2 / step
    magnitude = np.abs(flat)
    added -= magnitude
    added *= magnitude
    per_band = added @ _ONE_HOT
    del added
    # Ending at e zeroes bands e..7: a suffix sum of their errors, nothing past the last.
    error = np.concatenate([np.cumsum(per_band[:, ::-1], 1)[:, ::-1], np.zeros_like(per_band[:, :1])], 1)
    holds = (flat != 0).astype(np.float64) @ _ONE_HOT > 0
    # The coded levels (the bands below each block's end), flattened.
    coded = ends[:, None] > BAND_OF
    block = np.repeat(np.arange(busy.size), coded.sum(1))
    where = block * BANDS + np.broadcast_to(BAND_OF, coded.shape)[coded]
    unrefined, codes = classes.reshape(-1, BLOCK * BLOCK)[busy][coded] // 8, symbols(flat[coded])
    # A level's refinement for an end e is e's quarter and whether it lies in band e - 1:
    # its bits under each of the 8, summed by block and band, price every end at once.
    by_refinement = level_bits.reshape(-1, 8, level_bits.shape[1])
    sums = np.stack([np.bincount(where, by_refinement[unrefined, r, codes], busy.size * BANDS) for r in range(8)], 1)
    sums = sums.reshape(busy.size, BANDS, 4, 2)  # (block, band, quarter, in the last band)
    summary = summary.reshape(-1)[busy]
    cost = np.full((busy.size, LASTS), np.inf)
    cost[:, 0] = error[:, 0] + RATE_WEIGHT * last_bits[summary, 0]
    for end in range(1, LASTS):  # an end must hold a level in its last band
        quarter = QUARTER[end]
        bits = sums[:, : end - 1, quarter, 0].sum(1) + sums[:, end - 1, quarter, 1] + last_bits[summary, end]
        possible = holds[:, end - 1] & (end <= ends)
        cost[possible, end] = error[possible, end] + RATE_WEIGHT * bits[possible]
    out = levels.reshape(-1, BLOCK * BLOCK).copy()
    out[busy] = np.where(np.argmin(cost, 1)[:, None] > BAND_OF, flat, 0)
    return out.reshape(levels.shape)


_ONE_HOT = (BAND_OF[:, None] == np.arange(BANDS)).astype(np.float64)  # (64, BANDS): a level's band


def optimise(
    coefficients: np.ndarray,
    levels: np.ndarray,
    step: int,
    bits: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Each coefficient's level among rounding, one below it and zero, whichever costs least
    squared error (in steps²) plus RATE_WEIGHT per bit; ``bits`` (SIGNED_SUMMARISED_CLASSES,
    SYMBOLS) is what each symbol costs in its class under the dead-zone ``levels``' own
    statistics over the whole image, ``classes`` each coefficient's class under them in
    format version 11's classes (both taken from ``levels`` if not given: a whole image).
    The decoder never sees this choice, so it is the encoder's alone; ``truncate`` then
    chooses where each block ends."""
    if classes is None:
        classes = summarised_classes(levels, None)[2]
    if bits is None:
        bits = summarised_lengths(levels, step)[0]
    scaled = np.abs(coefficients) / step
    rounded = np.floor(scaled + 0.5)
    best = np.zeros_like(levels)
    nonzero = rounded > 0  # where rounding gives 0, every candidate is 0: only these have a choice
    scaled, rounded, sign, classes = scaled[nonzero], rounded[nonzero], np.sign(coefficients[nonzero]), classes[nonzero]
    chosen, cost = np.zeros(rounded.shape, dtype=LEVEL), np.full(rounded.shape, np.inf)
    for magnitude in (rounded, rounded - 1, np.zeros_like(rounded)):
        level = (sign * magnitude).astype(LEVEL)
        candidate = (scaled - magnitude) ** 2 + RATE_WEIGHT * bits[classes, symbols(level)]
        better = candidate < cost
        chosen[better], cost[better] = level[better], candidate[better]
    best[nonzero] = chosen
    return best


# ---------------------------------------------------------------- the context model
