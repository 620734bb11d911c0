"""Entropy coding of one layer's index maps with the adaptive context model (``context``):
a range coder (constriction's queue) over ``Categorical(perfect=False)`` models whose
float64 probabilities are the model's integer frequencies divided by their sum, so both
sides build bit-identical models. This is the only module that imports constriction.

constriction emits 32-bit words; they are stored big-endian and the encoder drops (from streams
of up to TRIM_BYTES) trailing bytes the decoder does not need (it pads with 0xFF, which decodes correctly
for ~0.4 bytes over the ideal length per stream on average, against ~2 for whole words).

The decoder also checks that a stream carries the information it decodes: the symbols'
code lengths under the model may exceed the stream's own bits by at most SLACK_BITS.
A range decoder fed past the end of a short stream keeps producing symbols; this check
ends a damaged or hostile stream after a few rows instead of letting 6 bytes "cover" a
whole 100-megapixel layer.
"""

from __future__ import annotations

from collections.abc import Callable

import constriction
import numpy as np

from ddncodec.context import SYMBOL, code_layer
from ddncodec.errors import FormatError

_PAD = b"\xff"
_MAX_TRIM = 8  # bytes tried off the end of a stream
TRIM_BYTES = 2048
"""Streams up to this long are trimmed: finding the cut replays the stream about four
times, which on a long stream costs more time than the ~1.6 bytes it saves are worth
(under 0.1 % of it)."""
SLACK_BITS = 64  # code length a valid stream may decode beyond its own size (coder flush, padding)
_FAMILY = constriction.stream.model.Categorical(perfect=False)


def _words(data: bytes) -> np.ndarray:
    """Stored bytes -> the decoder's words: padded with 0xFF to a whole word, plus one spare word."""
    padded = data + _PAD * (-len(data) % 4 + 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def probabilities(freq: np.ndarray) -> np.ndarray:
    """Positive integer frequencies (N, K) -> the float64 odds both sides build bit-identically."""
    return freq.astype(np.float64) / freq.sum(1, keepdims=True).astype(np.float64)


def _bits(probabilities: np.ndarray, symbols: np.ndarray) -> float:
    """Code length of ``symbols`` under odds (N, K), one row per symbol, or (K,) for all of them."""
    if probabilities.ndim == 1:
        return float(-np.log2(probabilities)[symbols].sum())
    return float(-np.log2(probabilities[np.arange(symbols.size), symbols]).sum())


def _model(probabilities: np.ndarray) -> tuple:
    """constriction's arguments for odds (N, K), one row per symbol (the family and its
    parameters), or (K,) for every symbol of a call (one concrete model: built once)."""
    if probabilities.ndim == 1:
        return (constriction.stream.model.Categorical(probabilities, perfect=False),)
    return _FAMILY, probabilities


def _budget(data: bytes) -> float:
    """The most code length (bits) a valid stream of ``data`` decodes to: its bits, a
    margin for the coder's quantised probabilities, and the flush."""
    return 8 * len(data) * (1 + 1 / 64) + SLACK_BITS


class Decoder:
    """Decodes a stream step by step, refusing it once it has yielded more information than it holds."""

    def __init__(self, data: bytes, what: str = "layer stream") -> None:
        self.what = what  # what the messages call the stream
        self.coder = constriction.stream.queue.RangeDecoder(_words(data))
        self.budget = _budget(data)
        self.size = len(data)
        self.spent = 0.0

    def __call__(self, probabilities: np.ndarray, amount: int = 0) -> np.ndarray:
        """The next symbols: one per row of odds (N, K), or ``amount`` of them under odds (K,)."""
        symbols = self._decode(probabilities, amount)
        self._charge(_bits(probabilities, symbols))
        return symbols

    def runs(self, odds: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The next ``sizes.sum()`` symbols, ``sizes[g]`` of them under odds ``odds[g]`` (G, K)
        one run after the other; their code length is charged once for all the runs."""
        symbols = np.concatenate([self._decode(p, int(n)) for p, n in zip(odds, sizes, strict=True)])
        self._charge(float(-np.log2(odds)[np.repeat(np.arange(len(sizes)), sizes), symbols].sum()))
        return symbols

    def _decode(self, probabilities: np.ndarray, amount: int) -> np.ndarray:
        try:
            model = _model(probabilities)
            return self.coder.decode(*model, *([amount] if probabilities.ndim == 1 else [])).astype(np.int64)
        except (AssertionError, ValueError) as exc:
            msg = f"corrupt {self.what} ({exc})"
            raise FormatError(msg) from exc

    def _charge(self, bits: float) -> None:
        self.spent += bits
        if self.spent > self.budget:
            msg = f"corrupt {self.what}: it decodes to more information than its {self.size} bytes hold"
            raise FormatError(msg)


def _steps(
    grids: list[np.ndarray],
    parents: list[np.ndarray],
    initial: np.ndarray,
    take: Callable[[np.ndarray, np.ndarray], object],
) -> None:
    """A known layer's steps in coding order: each one's probabilities (N, K) and symbols (N,)
    handed to ``take`` as the model reaches it, so no layer-sized table of odds is held (a
    24-megapixel layer of 4 px cells would take 190 MB of them)."""
    work = [np.asarray(g, dtype=np.int64).copy() for g in grids]

    def record(tile: int, step, freq: np.ndarray) -> np.ndarray:
        symbols = work[tile][step.row, step.columns]
        take(probabilities(freq), symbols)
        return symbols

    code_layer(initial, work, parents, record)


def encode(grids: list[np.ndarray], parents: list[np.ndarray], initial: np.ndarray) -> bytes:
    """One layer's index maps (one (rows, columns) grid per tile, in stream order) -> bytes.
    ``parents`` holds the co-located symbols of the layer before, ``initial`` the layer's
    (CONTEXTS, K) table in the file's table set."""
    writer = Writer()
    _steps(grids, parents, initial, writer.write)
    return writer.finish()


class Writer:
    """A stream written step by step: ``write`` the symbols (N,) of each step under their
    probabilities (N, K), or (K,) for all N, in the order a ``Decoder`` will be asked for
    them (K may differ from step to step); ``finish`` returns the bytes. The steps are kept
    for the trim only while the stream is short (TRIM_BYTES), so a long one costs no memory
    beyond the coder's."""

    def __init__(self) -> None:
        self.encoder = constriction.stream.queue.RangeEncoder()
        self.calls: list[tuple[np.ndarray, np.ndarray]] | None = []

    def write(self, probabilities: np.ndarray, symbols: np.ndarray) -> None:
        symbols = symbols.astype(np.int32)
        self.encoder.encode(symbols, *_model(probabilities))
        if self.calls is not None:
            self.calls.append((probabilities, symbols))
            if self.encoder.num_bits() > 8 * TRIM_BYTES:
                self.calls = None

    def runs(self, odds: np.ndarray, sizes: np.ndarray, symbols: np.ndarray) -> None:
        """``symbols`` in runs of ``sizes[g]`` under odds ``odds[g]`` (G, K): ``Decoder.runs``'s input."""
        start = 0
        for p, size in zip(odds, sizes.tolist(), strict=True):
            self.write(p, symbols[start : start + size])
            start += size

    def finish(self) -> bytes:
        data = self.encoder.get_compressed().astype(">u4").tobytes()
        return data if self.calls is None else _trimmed(data, self.calls)


def _trimmed(data: bytes, steps: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """``data`` without the longest tail it still decodes to the same symbols without
    (verified, so always safe)."""

    def decodes(candidate: bytes) -> bool:
        try:
            decoder = Decoder(candidate)
            return all(np.array_equal(decoder(p, s.size), s) for p, s in steps)
        except FormatError:
            return False

    if not decodes(data):
        msg = "internal error: a stream does not decode to its own symbols"
        raise RuntimeError(msg)
    low, high = max(len(data) - _MAX_TRIM, 0), len(data)  # `high` always decodes
    while low < high:
        mid = (low + high) // 2
        if decodes(data[:mid]):
            high = mid
        else:
            low = mid + 1
    return data[:high]


def decode(
    data: bytes, shapes: list[tuple[int, int]], parents: list[np.ndarray], initial: np.ndarray
) -> list[np.ndarray]:
    """Bytes -> one layer's index maps, one grid of ``shapes[tile]`` per tile (``context.SYMBOL``)."""
    grids = [np.full(shape, -1, dtype=SYMBOL) for shape in shapes]
    decoder = Decoder(data)
    code_layer(initial, grids, parents, lambda _tile, _step, freq: decoder(probabilities(freq)))
    return grids


def ideal_bits(grids: list[np.ndarray], parents: list[np.ndarray], initial: np.ndarray) -> float:
    """−Σ log2 p of a layer's symbols under the adaptive model: the length a perfect coder reaches."""
    lengths: list[float] = []
    _steps(grids, parents, initial, lambda p, symbols: lengths.append(_bits(p, symbols)))
    return sum(lengths)
