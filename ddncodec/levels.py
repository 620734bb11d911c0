"""The detail layer's integer levels as a stream: their classes, the adaptive context model, escapes.

A coefficient's odds come from counts per class (channel, frequency band, the magnitudes
of the same coefficient in the neighbouring blocks already coded) that adapt as the layer
is coded (``context.adapt``, the index model's rule): integers only, so both sides build
the same odds. Levels -LARGEST..LARGEST are symbols of their own, larger ones escape with
a uniform payload; smooth blocks (``smooth``) reuse these symbols for their planes.

Two layouts of the stream (``Layout``): format version 5 on codes block row by block row
(every channel of a row before the next row, so a decoder needs one block row of context)
and, within a group, the symbols class by class, one constriction model per class (a few
dozen models per group instead of 32 odds per coefficient); versions 3 and 4 coded channel
by channel and each coefficient with odds of its own, and are still read. Both use the
same classes and counts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ddncodec import entropy
from ddncodec.context import adapt

BLOCK = 8
LARGEST = 15  # levels -LARGEST..LARGEST are symbols of their own; larger ones escape
ESCAPE = 2 * LARGEST + 1
SYMBOLS = ESCAPE + 1
PAYLOAD = 128  # an escaped level is two symbols of a uniform PAYLOAD-ary alphabet: sign and 13 bits
PAYLOAD_BITS = 13
COUNT_INCREMENT = 32  # count added per coded level
NEIGHBOURHOOD = 4  # classes of the neighbours' magnitudes: none, 1, 2-3, 4 or more
LEVEL = np.int16  # levels fit: |DC| <= 8 * 255 * sqrt(3) < 2**12, escapes carry 13 bits


class Layout(enum.Enum):
    """The order of a detail stream's symbols (see the module docstring)."""

    CHANNELS = 3  # format versions 3 and 4
    ROWS = 5  # format version 5 on


_n = np.arange(BLOCK)
# Frequency band of each of the 64 coefficients (row-major u, v): by u + v, the high ones merged.
_BAND = np.digitize(_n[:, None] + _n[None, :], [1, 2, 3, 4, 6, 8, 11]).ravel()
BANDS = 8
CLASSES = 2 * BANDS * NEIGHBOURHOOD  # (luma or chroma) x band x neighbourhood
INITIAL = np.array([max(4, 1024 >> (2 * abs(v))) for v in range(-LARGEST, LARGEST + 1)] + [4], dtype=np.int64)


def blocks(height: int, width: int) -> tuple[int, int]:
    """Block rows and columns of an image (the last ones zero-padded)."""
    return -(-height // BLOCK), -(-width // BLOCK)


def tally(levels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(CLASSES, SYMBOLS) counts of ``levels``' symbols by class."""
    return np.bincount((classes * SYMBOLS + symbols(levels)).ravel(), minlength=CLASSES * SYMBOLS).reshape(
        CLASSES, SYMBOLS
    )


def code_lengths(tally: np.ndarray) -> np.ndarray:
    """Bits per symbol and class under the statistics ``tally`` (an escape's payload included)."""
    counts = tally + 1
    bits = np.log2(counts.sum(1, keepdims=True)) - np.log2(counts)
    bits[:, ESCAPE] += 2 * np.log2(PAYLOAD)
    return bits


def _magnitudes(levels: np.ndarray) -> np.ndarray:
    return np.minimum(np.abs(levels), 3).astype(np.int8)


_NEIGHBOURHOOD_OF = np.digitize(np.arange(5 * 3 + 1), [1, 2, 4])  # by the sum of up to 5 magnitudes of at most 3


def _class_of(tone: int, total: np.ndarray) -> np.ndarray:
    """Classes from a tone (0 luma, 1 chroma) and the neighbours' summed magnitudes (..., 64)."""
    return (tone * BANDS + _BAND) * NEIGHBOURHOOD + _NEIGHBOURHOOD_OF[total]


def classes_of(levels: np.ndarray, above: np.ndarray | None) -> np.ndarray:
    """The class of every coefficient of a band of complete ``levels`` (3, rows, cols, 64),
    ``above`` the block row before the band (None at the top): what ``_groups`` computes
    group by group, all at once."""
    magnitude = _magnitudes(levels)
    before = np.zeros_like(magnitude[:, :1]) if above is None else _magnitudes(above)[:, None]
    up = np.concatenate([before, magnitude[:, :-1]], 1)
    wide = np.pad(up, ((0, 0), (0, 0), (1, 1), (0, 0)))
    total = wide[:, :, :-2] + wide[:, :, 1:-1] + wide[:, :, 2:]
    beside = np.pad(magnitude, ((0, 0), (0, 0), (1, 1), (0, 0)))
    odd = np.arange(levels.shape[2]) % 2 == 1
    total[:, :, odd] += beside[:, :, :-2][:, :, odd] + beside[:, :, 2:][:, :, odd]
    return np.stack([_class_of(min(channel, 1), total[channel]) for channel in range(3)])


@dataclass
class _Group:
    """One coding group (the index model's half-row): every coefficient of the blocks
    ``cols`` of block row ``row`` of channel ``channel``, and each one's class."""

    channel: int
    row: int
    cols: np.ndarray
    classes: np.ndarray  # (len(cols), 64)


CLASS_BAND = 8  # block rows whose classes the encoder computes at once (``classes_of``)


def _groups(
    levels: np.ndarray, layout: Layout, skip: np.ndarray | None = None, start: int = 0, complete: bool = False
) -> Iterator[_Group]:
    """Each block row's blocks, first the even block columns, then the odd ones (whose left
    and right neighbours are known by then), channel by channel over the whole image
    (``Layout.CHANNELS``) or row by row (``Layout.ROWS``). ``levels`` must hold every
    group already taken when the next one is drawn: the decoder writes into it. The blocks
    of ``skip`` (rows, cols) are left out: their levels are zero. Rows before ``start`` are
    context only (a band's row above it). With ``complete`` levels (the encoder's, in
    ``Layout.ROWS``) the classes of CLASS_BAND block rows are computed at once."""
    _, rows, cols, _ = levels.shape
    band, band_classes = slice(0, 0), np.empty(0)
    if layout is Layout.CHANNELS:
        order = ((channel, row) for channel in range(3) for row in range(start, rows))
    else:
        order = ((channel, row) for row in range(start, rows) for channel in range(3))
    for channel, row in order:
        if complete and row >= band.stop:
            band = slice(row, min(row + CLASS_BAND, rows))
            band_classes = classes_of(levels[:, band], levels[:, row - 1] if row else None)
        # Neighbours' magnitudes from rows padded by a zero block each side: column c is c + 1.
        above = None if complete else _padded_magnitudes(levels[channel, row - 1] if row else None, cols)
        for phase in (0, 1):
            at = np.arange(phase, cols, 2)
            if skip is not None:
                at = at[~skip[row, at]]
            if not at.size:  # a single block column has no odd phase, a smooth row no blocks
                continue
            if above is None:  # the encoder's complete levels: the band's classes, taken at once
                yield _Group(channel, row, at, band_classes[channel, row - band.start, at])
                continue
            total = above[at] + above[at + 1] + above[at + 2]
            if phase:  # the even blocks of this row are known by now
                here = _padded_magnitudes(levels[channel, row], cols)
                total += here[at] + here[at + 2]
            yield _Group(channel, row, at, _class_of(min(channel, 1), total))


def _padded_magnitudes(row: np.ndarray | None, cols: int) -> np.ndarray:
    """(cols + 2, 64) ``_magnitudes`` of one channel's block row, a zero block either side (all zero for None)."""
    padded = np.zeros((cols + 2, BLOCK * BLOCK), dtype=np.int8)
    if row is not None:
        padded[1:-1] = _magnitudes(row)
    return padded


def symbols(values: np.ndarray) -> np.ndarray:
    """Levels -> symbols: -LARGEST..LARGEST as themselves (shifted to 0..2 LARGEST), larger ones ESCAPE."""
    return np.where(np.abs(values) > LARGEST, ESCAPE, values.astype(np.int64) + LARGEST)


def payload(values: np.ndarray) -> np.ndarray:
    """Escaped levels -> (2N,) uniform symbols: the sign with the top 6 bits, then the low 7."""
    excess = np.abs(values.astype(np.int64)) - LARGEST - 1
    word = (values < 0).astype(np.int64) << PAYLOAD_BITS | excess
    return np.stack([word >> 7, word & (PAYLOAD - 1)], 1).ravel()


def from_payload(symbols: np.ndarray) -> np.ndarray:
    word = symbols[0::2] << 7 | symbols[1::2]
    magnitude = (word & ((1 << PAYLOAD_BITS) - 1)) + LARGEST + 1
    return np.where(word >> PAYLOAD_BITS, -magnitude, magnitude)


@dataclass
class _Coding:
    """How a group's symbols meet the coder: its raster positions in coding order, and
    the odds, one row (SYMBOLS,) per run of ``sizes`` symbols, or, without ``sizes``,
    one row per symbol."""

    order: np.ndarray
    odds: np.ndarray
    sizes: np.ndarray | None = None


def _coding(classes: np.ndarray, counts: np.ndarray, layout: Layout) -> _Coding:
    """Class by class under ``Layout.ROWS`` (a run per class present, in class order),
    each symbol with odds of its own under ``Layout.CHANNELS``."""
    flat = classes.ravel()
    if layout is Layout.CHANNELS:
        return _Coding(np.arange(flat.size), entropy.probabilities(counts[flat]))
    sizes = np.bincount(flat, minlength=CLASSES)
    present = np.flatnonzero(sizes)
    order = np.argsort(flat.astype(np.uint8), kind="stable")  # a radix sort on bytes
    return _Coding(order, entropy.probabilities(counts[present]), sizes[present])


UNIFORM = np.full(PAYLOAD, 1 / PAYLOAD)


def _initial_counts() -> np.ndarray:
    return np.tile(INITIAL, (CLASSES, 1))


def _run(
    levels: np.ndarray,
    layout: Layout,
    code: Callable[[_Group, _Coding], np.ndarray],
    skip: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    start: int = 0,
    complete: bool = False,
) -> None:
    """The adaptive model over a layer's steps, from block row ``start`` on, adapting
    ``counts`` (fresh ones if not given). ``code(group, coding)`` returns the group's
    levels in raster order (the encoder reads them, the decoder decodes them); they are
    counted and, unless the levels are ``complete`` (the encoder's: read only, so other
    work may read them meanwhile), written into ``levels``."""
    counts = _initial_counts() if counts is None else counts
    for group in _groups(levels, layout, skip, start, complete):
        values = code(group, _coding(group.classes, counts, layout))
        if not complete:
            levels[group.channel, group.row, group.cols] = values.reshape(group.cols.size, -1)
        tally = np.bincount(group.classes.ravel() * SYMBOLS + symbols(values), minlength=CLASSES * SYMBOLS)
        adapt(counts, tally.reshape(CLASSES, SYMBOLS), COUNT_INCREMENT)


def write(levels: np.ndarray, writer: entropy.Writer, skip: np.ndarray | None = None) -> None:
    """Code (3, rows, cols, 64) integer levels into ``writer`` (``Layout.ROWS``). A group's
    classes read only steps already taken, so the complete levels serve as the coder's
    state (read, never written). The blocks of ``skip`` are not coded."""
    work = levels if levels.dtype == LEVEL else levels.astype(LEVEL)

    def put(group: _Group, coding: _Coding) -> np.ndarray:
        values = work[group.channel, group.row, group.cols].ravel()
        codes = symbols(values)
        assert coding.sizes is not None  # the encoder writes Layout.ROWS
        writer.runs(coding.odds, coding.sizes, codes[coding.order])
        escaped = values[codes == ESCAPE]
        if escaped.size:
            writer.write(UNIFORM, payload(escaped))
        return values

    _run(work, Layout.ROWS, put, skip, complete=True)


def encode(levels: np.ndarray) -> bytes:
    """(3, rows, cols, 64) integer levels -> a detail stream of them alone (``Layout.ROWS``)."""
    writer = entropy.Writer()
    write(levels, writer)
    return writer.finish()


def read(
    decoder: entropy.Decoder, height: int, width: int, layout: Layout = Layout.ROWS, skip: np.ndarray | None = None
) -> np.ndarray:
    """The levels of an image of (height, width), decoded from ``decoder`` -> (3, rows, cols, 64);
    the blocks of ``skip`` were not coded and are zero."""
    rows, cols = blocks(height, width)
    levels = np.zeros((3, rows, cols, BLOCK * BLOCK), dtype=LEVEL)
    _run(levels, layout, _reader(decoder), skip)
    return levels


def read_bands(
    decoder: entropy.Decoder, height: int, width: int, band_rows: int, skip: np.ndarray | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """``read`` for ``Layout.ROWS``, band by band of ``band_rows`` block rows: each band's
    slice of block rows and its levels (3, band rows, cols, 64), holding only the band and
    the block row above it (its context), so a decoder's memory does not grow with the image.
    A band whose every block is in ``skip`` codes nothing and is not yielded: its levels are zero."""
    rows, cols = blocks(height, width)
    counts = _initial_counts()
    get = _reader(decoder)
    nothing = np.zeros((3, 1, cols, BLOCK * BLOCK), dtype=LEVEL)
    above = nothing  # the image's top: no context
    for top in range(0, rows, band_rows):
        band = slice(top, min(top + band_rows, rows))
        if skip is not None and skip[band].all():
            above = nothing
            continue
        window = np.zeros((3, 1 + band.stop - band.start, cols, BLOCK * BLOCK), dtype=LEVEL)
        window[:, :1] = above
        skipped = None
        if skip is not None:
            skipped = np.zeros((window.shape[1], cols), dtype=bool)
            skipped[1:] = skip[band]
        _run(window, Layout.ROWS, get, skipped, counts, start=1)
        above = window[:, -1:].copy()
        yield band, window[:, 1:]


def _reader(decoder: entropy.Decoder) -> Callable[[_Group, _Coding], np.ndarray]:
    """The decoder's side of ``_run``: each group's levels, decoded."""

    def get(_group: _Group, coding: _Coding) -> np.ndarray:
        codes = np.empty(coding.order.size, dtype=np.int64)
        runs = coding.sizes is not None
        codes[coding.order] = decoder.runs(coding.odds, coding.sizes) if runs else decoder(coding.odds)
        values = codes - LARGEST
        escaped = codes == ESCAPE
        if escaped.any():
            values[escaped] = from_payload(decoder(UNIFORM, 2 * int(escaped.sum())))
        return values

    return get


def decode(data: bytes, height: int, width: int, layout: Layout = Layout.ROWS) -> np.ndarray:
    """A detail stream of levels alone (format versions 3-5) -> (3, rows, cols, 64) levels."""
    return read(entropy.Decoder(data, "detail stream"), height, width, layout)
