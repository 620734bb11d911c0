"""Colour correction: tone curves for a decode's three channels, fitted per photo by the encoder.

What the walk and the detail layer leave behind is off in its tones in a way that differs
from photo to photo: contrast pulled towards the middle, shadows or highlights shifted,
chroma shrunk where few bits went to it. No filter trained on other photos can know which
way this one leans, but the encoder can. Per channel it fits by least squares a curve
(piecewise linear over the channel's own level, KNOTS knots SPACING levels apart) and how
much of the differences to the other two channels to add, and sends them in 33 bytes
(format version 10), much as VVC sends a picture's luma mapping: once for the walk, before
the detail layer codes what it leaves, and once for the decode. On 17 ``bsds500/val``
photos, q3-q8, that took 2.6 % off the BD-rate (the decode's alone 1.8 %, +0.23 dB at q3);
a single 3×3 colour matrix for the decode took 0.7 %.

The map is integer arithmetic on 8-bit levels, so every decoder gives the same pixels.
It is applied before the smooth blocks are painted, which stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ddncodec.errors import FormatError

SPACING = 32  # levels between knots: 0, 32, ..., 256
KNOTS = 256 // SPACING + 1
SHIFT = 7  # the map works in 1/128 level: knots in 1/4 level, weighted by SPACING = 32 in all, and cross terms
BYTES = 3 * (KNOTS + 2)  # per channel its knots and two cross terms, one signed byte each
RIDGE = 1e-4
"""The knots' pull towards 0, per pixel: a knot no level of the photo reaches (one without
shadows, say) is otherwise free, and its value would be any size."""
STRIP = 1 << 16  # pixels fitted or mapped at once: bounded memory on any photo
SAMPLED = 2  # the fit reads one pixel in SAMPLED² (bsds500/val at q3: the same gain to 0.001 dB)
# The smooth blocks' size (``smooth.BLOCK``), which a fit may leave out: not imported, as the
# container reads this module and ``smooth`` brings the entropy coder (tests/test_colour.py ties them).
BLOCK = 8
RATE_SLOPE = 2.0
"""dB a photo's PSNR gains per e-fold of its bytes near the rungs that use the map (q1-q5
on bsds500/val move 2-5 dB per e-fold): the correction must gain more than its bytes buy."""

Runner = Callable[[Callable[[slice], object], list[slice]], list]
_OTHERS = ((1, 2), (0, 2), (0, 1))  # the channels whose differences to channel c it adds
_LEVELS = np.arange(256)
_WEIGHTS = np.zeros((256, KNOTS), dtype=np.int64)  # each level's weights on the knots, summing to SPACING
_WEIGHTS[_LEVELS, _LEVELS // SPACING] = SPACING - _LEVELS % SPACING
_WEIGHTS[_LEVELS, _LEVELS // SPACING + 1] = _LEVELS % SPACING


@dataclass(frozen=True)
class Correction:
    """Channel c of pixel p gains ``curve_c(p[c]) + Σ cross[c][k] · (p[other k] - p[c]) / 128``,
    rounded down and clipped to 0..255; ``curve_c`` is linear between knots j·SPACING."""

    knots: np.ndarray  # (3, KNOTS) int, -128..127: each curve's value at its knots, in 1/4 level
    cross: np.ndarray  # (3, 2) int, -128..127: the weights of the other channels' differences, in 1/128

    def to_bytes(self) -> bytes:
        return np.concatenate([self.knots, self.cross], 1).astype(np.int8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Correction:
        if len(data) != BYTES:
            msg = f"corrupt .ddn header: a colour correction of {len(data)} bytes, not {BYTES}"
            raise FormatError(msg)
        values = np.frombuffer(data, dtype=np.int8).astype(np.int64).reshape(3, KNOTS + 2)
        return cls(values[:, :KNOTS], values[:, KNOTS:])

    def tables(self) -> np.ndarray:
        """(3 outputs, 3 inputs, 256) int32: the map as a sum of lookups, in 1/128 level. Output c
        is (Σ_i tables[c][i][p[i]]) >> SHIFT: its own channel's entry holds 128·p, the curve, the
        rounding and minus the cross weights times p; the others', their weight times p."""
        curves = self.knots @ _WEIGHTS.T
        tables = np.zeros((3, 3, 256), dtype=np.int64)
        for c, others in enumerate(_OTHERS):
            tables[c, c] = (_LEVELS << SHIFT) + curves[c] + (1 << (SHIFT - 1)) - self.cross[c].sum() * _LEVELS
            for weight, other in zip(self.cross[c], others, strict=True):
                tables[c, other] = weight * _LEVELS
        return tables.astype(np.int32)

    def apply(self, pixels: np.ndarray, run: Runner | None = None) -> None:
        """Correct (H, W, 3) uint8 ``pixels`` in place, STRIP pixels at a time (on ``run``'s workers)."""
        tables = self.tables()

        def strip(rows: slice) -> None:
            levels = pixels[rows].copy()  # every channel is mapped from the pixel before correction
            for c in range(3):
                total = tables[c, 0].take(levels[..., 0])
                total += tables[c, 1].take(levels[..., 1])
                total += tables[c, 2].take(levels[..., 2])
                total >>= SHIFT
                pixels[rows, :, c] = np.clip(total, 0, 255)

        _strips(strip, pixels.shape, run)


def fit(
    decoded: np.ndarray, original: np.ndarray, run: Runner | None = None, left_out: np.ndarray | None = None
) -> Correction:
    """The least-squares correction from ``decoded`` to ``original`` (both (H, W, 3) uint8),
    rounded to the file's precision, from every SAMPLED-th row and column (as good a fit on a
    photo, in a fraction of the time), leaving out the BLOCK×BLOCK blocks of ``left_out``
    (rows, cols): the smooth blocks, painted over whatever the map makes of them (under them a
    walk can be anything: fitted to, they bent a whole curve). A curve's basis depends only on
    the channel's level, so the normal equations are built from sums per level (``_moments``,
    on ``run``'s workers)."""
    kept = None
    if left_out is not None:  # the sampled pixels' blocks
        height, width = decoded.shape[:2]
        rows, cols = (np.arange(0, n, SAMPLED) // BLOCK for n in (height, width))
        kept = ~left_out[rows[:, None], cols[None, :]]
    moments = _moments(decoded[::SAMPLED, ::SAMPLED], original[::SAMPLED, ::SAMPLED], run, kept)
    hats = _WEIGHTS / SPACING
    knots, cross = np.zeros((3, KNOTS)), np.zeros((3, 2))
    for c in range(3):
        count, first, second, first2, both, second2, target, target_first, target_second = moments[c]
        gram = np.zeros((KNOTS + 2, KNOTS + 2))
        gram[:KNOTS, :KNOTS] = hats.T @ (count[:, None] * hats) + RIDGE * count.sum() * np.eye(KNOTS)
        gram[:KNOTS, KNOTS] = gram[KNOTS, :KNOTS] = hats.T @ first
        gram[:KNOTS, KNOTS + 1] = gram[KNOTS + 1, :KNOTS] = hats.T @ second
        gram[KNOTS:, KNOTS:] = [[first2.sum(), both.sum()], [both.sum(), second2.sum()]]
        towards = np.concatenate([hats.T @ target, [target_first.sum(), target_second.sum()]])
        solution = np.linalg.lstsq(gram, towards, rcond=None)[0]
        knots[c], cross[c] = solution[:KNOTS] * 4, solution[KNOTS:] * (1 << SHIFT)
    return Correction(*(np.clip(np.round(x), -128, 127).astype(np.int64) for x in (knots, cross)))


def _moments(decoded: np.ndarray, original: np.ndarray, run: Runner | None, kept: np.ndarray | None) -> np.ndarray:
    """(3 channels, 9, 256): per channel c and level of c, the count of pixels, the sums of the
    two differences d1, d2 to the other channels, of d1², d1·d2, d2², of the error e
    (original - decoded) in c, of e·d1 and of e·d2; STRIP pixels at a time, of the pixels
    ``kept`` (all if None)."""

    def strip(rows: slice) -> np.ndarray:
        sums = np.zeros((3, 9, 256))
        levels = decoded[rows].reshape(-1, 3).astype(np.int64)
        errors = original[rows].reshape(-1, 3) - levels
        if kept is not None:
            mask = kept[rows].ravel()
            levels, errors = levels[mask], errors[mask]
        for c, (a, b) in enumerate(_OTHERS):
            first, second, error = levels[:, a] - levels[:, c], levels[:, b] - levels[:, c], errors[:, c]
            terms = (None, first, second, first * first, first * second, second * second, error)
            for k, weights in enumerate((*terms, error * first, error * second)):
                sums[c, k] = np.bincount(levels[:, c], weights=weights, minlength=256)
        return sums

    return sum(_strips(strip, decoded.shape, run), np.zeros((3, 9, 256)))


def _strips(work: Callable[[slice], object], shape: tuple[int, ...], run: Runner | None) -> list:
    """``work`` over an image of ``shape`` in strips of whole rows, about STRIP pixels each."""
    rows = max(1, STRIP // shape[1])
    strips = [slice(top, top + rows) for top in range(0, shape[0], rows)]
    return [work(each) for each in strips] if run is None else run(work, strips)


def worth_it(gain_db: float, file_bytes: int) -> bool:
    """Whether a correction that gains ``gain_db`` pays its BYTES in a file of ``file_bytes``."""
    return gain_db > RATE_SLOPE * math.log1p(BYTES / file_bytes)
