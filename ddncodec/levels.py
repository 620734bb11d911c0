"""The detail layer's integer levels as a stream: their classes, the adaptive context model, escapes.

A coefficient's odds come from counts per class (channel, frequency band, the magnitudes
of the same coefficient in the neighbouring blocks already coded and, from format version
11 on, for the DC the signs of theirs) that adapt as the layer is coded (``context.adapt``,
the index model's rule): integers only, so both sides build the same odds. Levels
-LARGEST..LARGEST are symbols of their own, larger ones escape: from version 11 on with
their bit length coded adaptively, then their sign and bits, before that with a uniform
14-bit payload. Smooth blocks (``smooth``) reuse these symbols and the uniform payload for
their planes.

Four layouts of the stream (``Layout``). Format version 8 on codes block row by block
row (every channel of a row before the next row, so a decoder needs one block row of
context); each group opens with its blocks' last bands, then codes only the levels below
them, class by class (one constriction model per class present), its counts starting
from a table trained offline. Version 11 splits the DC's classes by the signs around it
and codes escapes by bit length, from two tables of its own, by step. Versions 5 and 6
coded the same rows without the last bands, from one generic start; versions 3 and 4
coded channel by channel and each coefficient with odds of its own. All are still read.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ddncodec import entropy
from ddncodec.context import adapt

BLOCK = 8
LARGEST = 15  # levels -LARGEST..LARGEST are symbols of their own; larger ones escape
ESCAPE = 2 * LARGEST + 1
SYMBOLS = ESCAPE + 1
PAYLOAD = 128  # versions 3-10 and smooth planes: an escape is two uniform PAYLOAD-ary symbols, sign and 13 bits
PAYLOAD_BITS = 13
COUNT_INCREMENT = 32  # count added per coded level
NEIGHBOURHOOD = 4  # classes of the neighbours' magnitudes: none, 1, 2-3, 4 or more
LEVEL = np.int16  # levels fit: |DC| <= 8 * 255 * sqrt(3) < 2**12, escapes carry 13 bits


class Layout(enum.Enum):
    """The order of a detail stream's symbols (see the module docstring)."""

    CHANNELS = 3  # format versions 3 and 4
    ROWS = 5  # format versions 5 and 6
    SUMMARISED = 8  # format versions 8 to 10: ROWS, each block's last band first, trained first counts
    DC_SIGNS = 11  # format version 11: SUMMARISED, DC classes by the signs around, escapes by bit length


_n = np.arange(BLOCK)
# Frequency band of each of the 64 coefficients (row-major u, v): by u + v, the high ones merged.
BAND_OF = np.digitize(_n[:, None] + _n[None, :], [1, 2, 3, 4, 6, 8, 11]).ravel()
BANDS = 8
CLASSES = 2 * BANDS * NEIGHBOURHOOD  # (luma or chroma) x band x neighbourhood
INITIAL = np.array([max(4, 1024 >> (2 * abs(v))) for v in range(-LARGEST, LARGEST + 1)] + [4], dtype=np.int64)


def blocks(height: int, width: int) -> tuple[int, int]:
    """Block rows and columns of an image (the last ones zero-padded)."""
    return -(-height // BLOCK), -(-width // BLOCK)


_NEIGHBOURHOOD_OF = np.digitize(np.arange(5 * 3 + 1), [1, 2, 4])  # by the sum of up to 5 magnitudes of at most 3


# Format version 11 splits the DC's classes by the signs of the DCs around it (the same
# neighbours): a walk that misses a region's brightness leaves DC residuals of one sign
# across it. Leaning one way or the other, a DC takes a class of its own (SIGNED_CLASSES).
SIGNED_CLASSES = CLASSES + 2 * 2 * NEIGHBOURHOOD  # + (leaning positive or negative) x tone x neighbourhood


def _class_of(tone: int, sums: np.ndarray) -> np.ndarray:
    """Classes from a tone (0 luma, 1 chroma) and what the neighbours show, summed (``_seen``,
    (..., 64) magnitudes; with their DCs' signs after them (..., 65), format version 11, the
    DC's class leans)."""
    classes = (tone * BANDS + BAND_OF) * NEIGHBOURHOOD + _NEIGHBOURHOOD_OF[sums[..., : BLOCK * BLOCK]]
    if sums.shape[-1] > BLOCK * BLOCK:
        dc, dc_signs = classes[..., 0], sums[..., BLOCK * BLOCK]
        leaning = CLASSES + ((dc_signs < 0) * 2 + tone) * NEIGHBOURHOOD + dc % NEIGHBOURHOOD
        classes[..., 0] = np.where(dc_signs != 0, leaning, dc)
    return classes


def _around(values: np.ndarray, above: np.ndarray | None) -> np.ndarray:
    """For (3, rows, cols, ...) ``values`` of a band and ``above`` the block row before it
    (3, cols, ...; None at the top): each block's sum over its neighbours' known when it is
    coded: up-left, up, up-right and, in odd columns, left and right."""
    before = np.zeros_like(values[:, :1]) if above is None else above[:, None]
    up = np.concatenate([before, values[:, :-1]], 1)
    tail = [(0, 0)] * (values.ndim - 3)
    wide = np.pad(up, ((0, 0), (0, 0), (1, 1), *tail))
    total = wide[:, :, :-2] + wide[:, :, 1:-1] + wide[:, :, 2:]
    beside = np.pad(values, ((0, 0), (0, 0), (1, 1), *tail))
    odd = np.arange(values.shape[2]) % 2 == 1
    total[:, :, odd] += beside[:, :, :-2][:, :, odd] + beside[:, :, 2:][:, :, odd]
    return total


def _seen(levels: np.ndarray, signed: bool) -> np.ndarray:
    """(..., 64) levels -> what their neighbours' classes read of them, int8: each level's
    magnitude, capped at 3, and, ``signed`` (format version 11), the DC's sign after
    them (..., 65), so that one sum over the neighbours gives both."""
    magnitudes = np.minimum(np.abs(levels), 3).astype(np.int8)
    if not signed:
        return magnitudes
    return np.concatenate([magnitudes, np.sign(levels[..., :1]).astype(np.int8)], -1)


def classes_of(levels: np.ndarray, above: np.ndarray | None, signed: bool = True) -> np.ndarray:
    """The class of every coefficient of a band of complete ``levels`` (3, rows, cols, 64),
    ``above`` the block row before the band (None at the top), the DCs' ``signed`` by their
    neighbours' (format version 11): what ``_groups`` computes group by group, all at once."""
    sums = _around(_seen(levels, signed), None if above is None else _seen(above, signed))
    return np.stack([_class_of(min(channel, 1), sums[channel]) for channel in range(3)])


@dataclass
class _Group:
    """One coding group (the index model's half-row): every coefficient of the blocks
    ``cols`` (all of one ``phase``, even or odd) of block row ``row`` of channel
    ``channel``, and each one's class."""

    channel: int
    row: int
    phase: int
    cols: np.ndarray
    classes: np.ndarray  # (len(cols), 64)


CLASS_BAND = 8  # block rows whose classes the encoder computes at once (``classes_of``)


def _groups(
    levels: np.ndarray, layout: Layout, skip: np.ndarray | None = None, start: int = 0, complete: bool = False
) -> Iterator[_Group]:
    """Each block row's blocks, first the even block columns, then the odd ones (whose left
    and right neighbours are known by then), channel by channel over the whole image
    (``Layout.CHANNELS``) or row by row (the others). ``levels`` must hold every
    group already taken when the next one is drawn: the decoder writes into it. The blocks
    of ``skip`` (rows, cols) are left out: their levels are zero. Rows before ``start`` are
    context only (a band's row above it). With ``complete`` levels (the encoder's, row by
    row) the classes of CLASS_BAND block rows are computed at once."""
    _, rows, cols, _ = levels.shape
    signed = layout is Layout.DC_SIGNS
    band, band_classes = slice(0, 0), np.empty(0)
    if layout is Layout.CHANNELS:
        order = ((channel, row) for channel in range(3) for row in range(start, rows))
    else:
        order = ((channel, row) for row in range(start, rows) for channel in range(3))
    for channel, row in order:
        if complete and row >= band.stop:
            band = slice(row, min(row + CLASS_BAND, rows))
            band_classes = classes_of(levels[:, band], levels[:, row - 1] if row else None, signed)
        # What the neighbours show (``_seen``), from rows padded by a zero block each side: column c is c + 1.
        width = (BLOCK * BLOCK + signed,)
        above = None if complete else _padded(_seen(levels[channel, row - 1], signed) if row else None, cols, width)
        for phase in (0, 1):
            at = np.arange(phase, cols, 2)
            if skip is not None:
                at = at[~skip[row, at]]
            if not at.size:  # a single block column has no odd phase, a smooth row no blocks
                continue
            if above is None:  # the encoder's complete levels: the band's classes, taken at once
                yield _Group(channel, row, phase, at, band_classes[channel, row - band.start, at])
                continue
            sums = above[at] + above[at + 1] + above[at + 2]
            if phase:  # the even blocks of this row are known by now
                here = _padded(_seen(levels[channel, row], signed), cols, width)
                sums += here[at] + here[at + 2]
            yield _Group(channel, row, phase, at, _class_of(min(channel, 1), sums))


def _padded(row: np.ndarray | None, cols: int, tail: tuple[int, ...]) -> np.ndarray:
    """(cols + 2, *tail) int8: one channel's block row of what its neighbours see (``_seen``)
    or of last bands (``tail`` ()) with a zero block either side, all zero for None."""
    padded = np.zeros((cols + 2, *tail), dtype=np.int8)
    if row is not None:
        padded[1:-1] = row
    return padded


# ---------------------------------------------------------------- block summaries (Layout.SUMMARISED)
# Most blocks code nothing, or only their low bands. Format version 8 sends first, for every
# block of a group, its *last band* (0: no level, else 1 + the highest band holding one);
# the levels of the bands above it are known zeros and not coded, and the others' classes
# learn how busy their block is: which quarter of the bands it ends in, and whether the
# level sits in that last band (which holds a nonzero level for sure). With the trained first
# counts below, the 24 Kodak images' levels took 8.7 % (q4, step 100) to 1.7 % (q8, step 8)
# fewer bytes than in version 6.
LASTS = BANDS + 1
_NEAR = np.digitize(np.arange(5 * BANDS + 1), [1, 4, 9, 16])  # the neighbours' summed last bands
NEAR = 5
_LUMA_LAST = np.digitize(np.arange(LASTS), [1, 3, 5, 7]) + 1  # a chroma block's class of its luma's last band
SUMMARY_CLASSES = 3 * NEAR * 6  # channel x neighbours x (luma's last band, 0 for luma itself)
QUARTER = np.digitize(np.arange(LASTS), [3, 5, 7])  # which quarter of the bands a block ends in
SUMMARISED_CLASSES = CLASSES * 8  # a level's class x its block's quarter (4) x in the last band or not
SIGNED_SUMMARISED_CLASSES = SIGNED_CLASSES * 8  # the same in format version 11
PRIORS = Path(__file__).with_name("level_priors.npz")
"""The first counts of Layout.SUMMARISED, trained on bsds500 train + test
(``models/training/level_priors.py``): part of format version 8, never to change."""
PRIORS_11 = Path(__file__).with_name("level_priors_11.npz")
"""The first counts of version 11's layout, made the same way from the encoder of version 11: two
tables, for the coarse steps and the fine ones (FINE_STEP)."""
FINE_STEP = 50
"""Version 11: a detail step below this starts from the fine steps' table (the ladder's q6-q8,
steps 37 to 8), any other from the coarse steps' (q2-q5, 255 to 66). One table for both lost
0.27 % BD-rate on bsds500/val: the fine steps' far more numerous levels outweighed the others'."""


_BAND_ENDS = (BAND_OF + 1).astype(np.int8)


def last_bands(levels: np.ndarray) -> np.ndarray:
    """(..., 64) levels -> (...) int8: each block's last band (0 if it holds no nonzero level),
    through int8 (a byte per level, where int64 took eight)."""
    return np.where(levels != 0, _BAND_ENDS, np.int8(0)).max(-1)


def _summary_classes(lasts: np.ndarray, group: _Group) -> np.ndarray:
    """Classes of a group's last bands from those already known in ``lasts`` (3, rows, cols):
    the row above (and, for the odd blocks, left and right) and, for chroma, the luma block's."""
    cols = lasts.shape[2]
    at = group.cols
    above = _padded(lasts[group.channel, group.row - 1] if group.row else None, cols, ()).astype(np.int64)
    total = above[at] + above[at + 1] + above[at + 2]
    if group.phase:
        here = _padded(lasts[group.channel, group.row], cols, ()).astype(np.int64)
        total += here[at] + here[at + 2]
    luma = _LUMA_LAST[lasts[0, group.row, at]] if group.channel else 0
    return (group.channel * NEAR + _NEAR[total]) * 6 + luma


REFINEMENT = (QUARTER[:, None] * 2 + (np.arange(LASTS)[:, None] - 1 == BAND_OF)).astype(np.int8)  # (LASTS, 64)


def _summarised(classes: np.ndarray, lasts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A group's coded positions (n, 64) bool, the bands below each block's last band, and
    their classes under Layout.SUMMARISED, from their ROWS ``classes`` (n, 64): each one's
    class, its block's quarter and whether it lies in the last band (``REFINEMENT``)."""
    inside = lasts[:, None] > BAND_OF
    return inside, classes[inside] * 8 + REFINEMENT[lasts][inside]


def summary_classes_of(lasts: np.ndarray, above: np.ndarray | None) -> np.ndarray:
    """The class of every last band of a band of complete ``lasts`` (3, rows, cols), ``above``
    the block row before it (3, cols; None at the top): what ``_summary_classes`` computes
    group by group, all at once."""
    near = np.zeros((3, 1, lasts.shape[2]), dtype=np.int64) if above is None else above[:, None].astype(np.int64)
    up = np.pad(np.concatenate([near, lasts[:, :-1].astype(np.int64)], 1), ((0, 0), (0, 0), (1, 1)))
    total = up[:, :, :-2] + up[:, :, 1:-1] + up[:, :, 2:]
    beside = np.pad(lasts.astype(np.int64), ((0, 0), (0, 0), (1, 1)))
    odd = np.arange(lasts.shape[2]) % 2 == 1
    total[:, :, odd] += beside[:, :, :-2][:, :, odd] + beside[:, :, 2:][:, :, odd]
    luma = np.concatenate(
        [np.zeros_like(lasts[:1], dtype=np.int64), np.broadcast_to(_LUMA_LAST[lasts[0]], (2, *lasts.shape[1:]))]
    )
    return (np.arange(3)[:, None, None] * NEAR + _NEAR[total]) * 6 + luma


def summarised_classes(
    levels: np.ndarray, above: np.ndarray | None, signed: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a band of complete ``levels`` (3, rows, cols, 64), ``above`` the block row before it
    (None at the top), as Layout.DC_SIGNS codes them (without DCs ``signed``,
    Layout.SUMMARISED): each block's last band and its class, and each level's class (only
    those of bands below the last band are coded)."""
    lasts = last_bands(levels)
    summary = summary_classes_of(lasts, None if above is None else last_bands(above))
    classes = classes_of(levels, above, signed)
    classes *= 8  # in place: a band's classes are its largest array
    classes += REFINEMENT[lasts]
    return lasts, summary, classes


def tallies(levels: np.ndarray, skip: np.ndarray | None = None, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """How often each symbol meets each class when ``levels`` are coded in Layout.DC_SIGNS
    (without DCs ``signed``, Layout.SUMMARISED): (SIGNED_SUMMARISED_CLASSES or
    SUMMARISED_CLASSES, SYMBOLS) for the levels and (SUMMARY_CLASSES, LASTS) for the last
    bands, band by band of CLASS_BAND block rows; what the trained first counts (``PRIORS``)
    are made of and the encoder prices its levels with."""
    kinds = SIGNED_SUMMARISED_CLASSES if signed else SUMMARISED_CLASSES
    found = np.zeros(kinds * SYMBOLS, np.int64), np.zeros(SUMMARY_CLASSES * LASTS, np.int64)
    rows = levels.shape[1]
    for top in range(0, rows, CLASS_BAND):
        band = slice(top, min(top + CLASS_BAND, rows))
        lasts, summary, classes = summarised_classes(levels[:, band], levels[:, top - 1] if top else None, signed)
        coded = np.ones(lasts.shape, dtype=bool) if skip is None else np.broadcast_to(~skip[band], lasts.shape)
        inside = coded[..., None] & (lasts[..., None] > BAND_OF)
        found[0][:] += np.bincount(
            (classes[inside] * SYMBOLS + symbols(levels[:, band][inside])), minlength=found[0].size
        )
        found[1][:] += np.bincount(summary[coded] * LASTS + lasts[coded], minlength=found[1].size)
    return found[0].reshape(kinds, SYMBOLS), found[1].reshape(SUMMARY_CLASSES, LASTS)


def summarised_lengths(levels: np.ndarray, step: int, skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bits per symbol by class of the levels (SIGNED_SUMMARISED_CLASSES, SYMBOLS) and of the
    last bands (SUMMARY_CLASSES, LASTS) when ``levels`` are coded in Layout.DC_SIGNS: the
    counts their own tallies and the trained first counts of ``step`` give (an escape's mean
    payload included, ``escape_bits``)."""
    found = tallies(levels, skip)
    lengths = []
    for tally, first in zip(found, _trained(True, step < FINE_STEP), strict=True):
        counts = first + COUNT_INCREMENT * tally
        lengths.append(np.log2(counts.sum(1, keepdims=True)) - np.log2(counts))
    lengths[0][:, ESCAPE] += escape_bits(levels)
    return lengths[0], lengths[1]


@functools.cache
def _trained(signed: bool, fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The first counts of the levels and the last bands: format version 8's table, or
    (``signed``) version 11's of the coarse steps or the ``fine`` ones."""
    if not signed:
        with np.load(PRIORS) as priors:
            return priors["levels"].astype(np.int64), priors["lasts"].astype(np.int64)
    with np.load(PRIORS_11) as priors:
        return priors["levels"][int(fine)].astype(np.int64), priors["lasts"][int(fine)].astype(np.int64)


@dataclass
class _Counts:
    """The adaptive counts of a stream: of the levels by class, (SUMMARISED on) of the last
    bands and (DC_SIGNS) of the escapes' bit lengths, (1, ESCAPE_LENGTH_CLASSES)."""

    levels: np.ndarray
    lasts: np.ndarray | None = None
    escapes: np.ndarray | None = None

    @classmethod
    def first(cls, layout: Layout, step: int) -> _Counts:
        """A stream's first counts: those of its layout and (version 11) its detail step."""
        if layout in (Layout.SUMMARISED, Layout.DC_SIGNS):
            levels, lasts = _trained(layout is Layout.DC_SIGNS, step < FINE_STEP)
            escapes = INITIAL_ESCAPES[None].copy() if layout is Layout.DC_SIGNS else None
            return cls(levels.copy(), lasts.copy(), escapes)
        return cls(np.tile(INITIAL, (CLASSES, 1)))


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


# ---------------------------------------------------------------- escapes by bit length (Layout.DC_SIGNS)
# At fine steps many levels escape (on 17 bsds500/val photos at q8, step 8: about 2,000 a photo,
# 6 % of the detail bits under the uniform payload), most of them within a few dozen of LARGEST.
# Version 11 codes each escape's excess |level| - LARGEST >= 1 as its bit length n (adaptive counts,
# one class for the whole stream: contexts by channel or band bought under 0.05 bits), then one
# uniform symbol of 2^(n+1) values, the sign above the n bits below the excess's leading one:
# about 5.5 bits an escape against 14.
ESCAPE_LENGTH_CLASSES = PAYLOAD_BITS + 1  # bit lengths 0..13: excesses up to 2^14 - 1, past any level a step gives
INITIAL_ESCAPES = np.array([64, 128, 128, 128, 64, 32, 16, 8, 8, 8, 8, 8, 8, 8], dtype=np.int64)
"""The first counts of the bit lengths (shaped like bsds500's at q8, worth ~20 escapes): part of
format version 11, never to change."""


def _lengths(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Escaped levels -> each one's bit length n (the excess's leading one at bit n) and
    its word: the sign at bit n, the excess's n bits below its leading one under it."""
    excess = np.abs(values.astype(np.int64)) - LARGEST
    n = np.frexp(excess.astype(np.float64))[1].astype(np.int64) - 1  # exact: excesses are far below 2^53
    word = (values < 0).astype(np.int64) << n | (excess - (1 << n))
    return n, word


def _from_lengths(n: np.ndarray, word: np.ndarray) -> np.ndarray:
    magnitude = LARGEST + (1 << n) + (word & ((1 << n) - 1))
    return np.where(word >> n, -magnitude, magnitude)


@functools.cache
def _uniform(size: int) -> np.ndarray:
    return np.full(size, 1 / size)


def escape_bits(levels: np.ndarray) -> float:
    """The mean bits of an escape's payload in ``levels`` (3, rows, cols, 64) under
    ``Layout.DC_SIGNS``: its bit length under the counts the image's own escapes
    give, its sign and its bits (0 without escapes), band by band of CLASS_BAND block rows
    (no image-sized mask)."""
    tally = np.zeros(ESCAPE_LENGTH_CLASSES, dtype=np.int64)
    for top in range(0, levels.shape[1], CLASS_BAND):
        band = levels[:, top : top + CLASS_BAND]
        escaped = band[(band > LARGEST) | (band < -LARGEST)]
        if escaped.size:
            tally += np.bincount(_lengths(escaped)[0], minlength=ESCAPE_LENGTH_CLASSES)
    if not tally.any():
        return 0.0
    counts = INITIAL_ESCAPES + COUNT_INCREMENT * tally
    bits = np.log2(counts.sum()) - np.log2(counts) + 1 + np.arange(ESCAPE_LENGTH_CLASSES)
    return float((tally * bits).sum() / tally.sum())


@dataclass
class _Coding:
    """How a group's symbols meet the coder: its raster positions in coding order, and
    the odds, one row (K,) per run of ``sizes`` symbols, or, without ``sizes``,
    one row per symbol."""

    order: np.ndarray
    odds: np.ndarray
    sizes: np.ndarray | None = None
    classes: np.ndarray | None = None  # the class of each run, or without ``sizes`` of each symbol


def _coding(classes: np.ndarray, counts: np.ndarray, by_class: bool = True) -> _Coding:
    """Class by class (a run per class present, in class order), or each symbol with
    odds of its own (``Layout.CHANNELS``)."""
    flat = classes.ravel()
    if not by_class:
        return _Coding(np.arange(flat.size), entropy.probabilities(counts[flat]), classes=flat)
    sizes = np.bincount(flat, minlength=counts.shape[0])
    present = np.flatnonzero(sizes)
    order = np.argsort(flat.astype(np.uint8 if counts.shape[0] <= 256 else np.uint16), kind="stable")  # radix sorts
    return _Coding(order, entropy.probabilities(counts[present]), sizes[present], present)


UNIFORM = np.full(PAYLOAD, 1 / PAYLOAD)


class _Stream(Protocol):
    """The coder's side of ``_run``: the writer writes what it is given and hands it back,
    the reader (given None) decodes it."""

    def symbols(self, known: np.ndarray | None, coding: _Coding) -> np.ndarray: ...

    def escaped(
        self, known: np.ndarray | None, count: int, lengths: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass
class _Writing:
    writer: entropy.Writer

    def symbols(self, known: np.ndarray | None, coding: _Coding) -> np.ndarray:
        assert known is not None
        if coding.sizes is None:
            self.writer.write(coding.odds, known[coding.order])
        else:
            self.writer.runs(coding.odds, coding.sizes, known[coding.order])
        return known

    def escaped(
        self, known: np.ndarray | None, count: int, lengths: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The escaped levels ``known``: a uniform payload each, or (``lengths``, the bit
        lengths' counts) their bit lengths, then their words, bit length by bit length;
        handed back with the bit lengths coded (None for the uniform payload)."""
        assert known is not None
        if lengths is None:
            self.writer.write(UNIFORM, payload(known))
            return known, None
        n, word = _lengths(known)
        self.writer.write(entropy.probabilities(lengths)[0], n)
        for length in np.unique(n).tolist():
            self.writer.write(_uniform(2 << length), word[n == length])
        return known, n


@dataclass
class _Reading:
    decoder: entropy.Decoder

    def symbols(self, known: np.ndarray | None, coding: _Coding) -> np.ndarray:
        codes = np.empty(coding.order.size, dtype=np.int64)
        by_class = coding.sizes is not None
        codes[coding.order] = self.decoder.runs(coding.odds, coding.sizes) if by_class else self.decoder(coding.odds)
        return codes

    def escaped(
        self, known: np.ndarray | None, count: int, lengths: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if lengths is None:
            return from_payload(self.decoder(UNIFORM, 2 * count)), None
        n = self.decoder(entropy.probabilities(lengths)[0], count)
        word = np.empty(count, dtype=np.int64)
        for length in np.unique(n).tolist():
            at = n == length
            word[at] = self.decoder(_uniform(2 << length), int(at.sum()))
        return _from_lengths(n, word), n


def _levels(stream: _Stream, known: np.ndarray | None, coding: _Coding, lengths: np.ndarray | None) -> np.ndarray:
    """A group's levels through ``stream``: their symbols, then the escaped ones' payloads
    (by bit length under the counts ``lengths``, adapted to them, where given)."""
    codes = stream.symbols(None if known is None else symbols(known), coding)
    values = codes - LARGEST
    escaped = codes == ESCAPE
    if escaped.any():
        values[escaped], coded = stream.escaped(None if known is None else known[escaped], int(escaped.sum()), lengths)
        if lengths is not None:
            assert coded is not None  # by bit length: the stream hands back the lengths it coded
            adapt(lengths, np.bincount(coded, minlength=ESCAPE_LENGTH_CLASSES)[None], COUNT_INCREMENT)
    return values


def _tally(classes: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    kinds, alphabet = counts.shape
    return np.bincount(classes * alphabet + codes, minlength=kinds * alphabet).reshape(kinds, alphabet)


def _adapt(counts: np.ndarray, coding: _Coding, codes: np.ndarray) -> None:
    """``adapt`` ``counts`` to a group's ``codes`` (raster order), touching only the rows of
    the classes present when the group was coded class by class (the others do not move)."""
    if coding.sizes is None:
        assert coding.classes is not None
        adapt(counts, _tally(coding.classes, codes, counts), COUNT_INCREMENT)
        return
    present, alphabet = coding.classes, counts.shape[1]
    runs = np.repeat(np.arange(present.size), coding.sizes)
    tally = np.bincount(runs * alphabet + codes[coding.order], minlength=present.size * alphabet)
    rows = counts[present]
    adapt(rows, tally.reshape(present.size, alphabet), COUNT_INCREMENT)
    counts[present] = rows


def _run(
    levels: np.ndarray,
    layout: Layout,
    stream: _Stream,
    counts: _Counts,
    skip: np.ndarray | None = None,
    start: int = 0,
    complete: bool = False,
) -> None:
    """The adaptive model over a layer's steps, from block row ``start`` on, adapting
    ``counts``. Each group's levels (and, from ``Layout.SUMMARISED`` on, its blocks' last
    bands first) go through ``stream``: the writer reads them from ``complete`` levels
    (read only, so other work may read them meanwhile), the reader decodes them into
    ``levels``."""
    summarised = layout in (Layout.SUMMARISED, Layout.DC_SIGNS)
    lasts = np.empty(0, dtype=np.int8)
    if summarised:
        lasts, known_rows = np.zeros(levels.shape[:3], dtype=np.int8), levels.shape[1] if complete else start
        for top in range(0, known_rows, CLASS_BAND):  # a band at a time: no image-sized mask
            rows = slice(top, min(top + CLASS_BAND, known_rows))
            lasts[:, rows] = last_bands(levels[:, rows])
        if complete and skip is not None and lasts[:, skip].any():  # they would be context, never coded
            msg = "the levels of the blocks left out must be zero"
            raise ValueError(msg)
    for group in _groups(levels, layout, skip, start, complete):
        known = levels[group.channel, group.row, group.cols] if complete else None
        if summarised:
            assert counts.lasts is not None
            # A few dozen symbols: one call, odds each.
            last_coding = _coding(_summary_classes(lasts, group), counts.lasts, by_class=False)
            block_lasts = stream.symbols(
                None if known is None else lasts[group.channel, group.row, group.cols].astype(np.int64), last_coding
            )
            _adapt(counts.lasts, last_coding, block_lasts)
            lasts[group.channel, group.row, group.cols] = block_lasts
            inside, classes = _summarised(group.classes, block_lasts)
        else:
            inside, classes = None, group.classes.ravel()
        if not classes.size:  # every block of the group ends before its first band: nothing to code
            continue
        if known is not None:
            known = known.ravel() if inside is None else known[inside]
        coding = _coding(classes, counts.levels, layout is not Layout.CHANNELS)
        values = _levels(stream, known, coding, counts.escapes)
        if not complete:
            block = levels[group.channel, group.row, group.cols]  # a copy: zeros where the decoder begins
            if inside is None:
                block = values.reshape(block.shape)
            else:
                block[inside] = values
            levels[group.channel, group.row, group.cols] = block
        _adapt(counts.levels, coding, symbols(values))


def write(levels: np.ndarray, writer: entropy.Writer, step: int, skip: np.ndarray | None = None) -> None:
    """Code (3, rows, cols, 64) integer levels of detail step ``step`` into ``writer``
    (``Layout.DC_SIGNS``). A group's classes read only steps already taken, so the
    complete levels serve as the coder's state (read, never written). The blocks of
    ``skip`` are not coded."""
    work = levels if levels.dtype == LEVEL else levels.astype(LEVEL)
    _run(work, Layout.DC_SIGNS, _Writing(writer), _Counts.first(Layout.DC_SIGNS, step), skip, complete=True)


def encode(levels: np.ndarray, step: int) -> bytes:
    """(3, rows, cols, 64) integer levels of detail step ``step`` -> a detail stream of them
    alone (``Layout.DC_SIGNS``)."""
    writer = entropy.Writer()
    write(levels, writer, step)
    return writer.finish()


def read(
    decoder: entropy.Decoder,
    height: int,
    width: int,
    step: int,
    layout: Layout = Layout.DC_SIGNS,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """The levels of detail step ``step`` of an image of (height, width), decoded from
    ``decoder`` -> (3, rows, cols, 64); the blocks of ``skip`` were not coded and are zero."""
    rows, cols = blocks(height, width)
    levels = np.zeros((3, rows, cols, BLOCK * BLOCK), dtype=LEVEL)
    _run(levels, layout, _Reading(decoder), _Counts.first(layout, step), skip)
    return levels


def read_bands(
    decoder: entropy.Decoder,
    height: int,
    width: int,
    band_rows: int,
    step: int,
    skip: np.ndarray | None = None,
    layout: Layout = Layout.DC_SIGNS,
) -> Iterator[tuple[slice, np.ndarray]]:
    """``read`` for the row by row layouts, band by band of ``band_rows`` block rows: each
    band's slice of block rows and its levels (3, band rows, cols, 64), holding only the
    band and the block row above it (its context), so a decoder's memory does not grow
    with the image. A band whose every block is in ``skip`` codes nothing and is not
    yielded: its levels are zero."""
    rows, cols = blocks(height, width)
    counts = _Counts.first(layout, step)
    stream = _Reading(decoder)
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
        _run(window, layout, stream, counts, skipped, start=1)
        above = window[:, -1:].copy()
        yield band, window[:, 1:]


def decode(data: bytes, height: int, width: int, step: int, layout: Layout = Layout.DC_SIGNS) -> np.ndarray:
    """A detail stream of levels alone (``encode``'s, or format versions 3-5 in theirs) of
    detail step ``step`` -> (3, rows, cols, 64) levels."""
    return read(entropy.Decoder(data, "detail stream"), height, width, step, layout)
