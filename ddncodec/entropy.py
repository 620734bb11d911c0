"""Entropy coding of one layer's symbols with that layer's prior: a range coder
(constriction's queue) over ``Categorical(perfect=False)`` models whose float64
probabilities come from the integer tables only, so both sides build bit-identical
models. This is the only module that imports constriction.

constriction emits 32-bit words; they are stored big-endian and the encoder drops
trailing bytes the decoder does not need (it pads with 0xFF, which decodes
correctly for ~0.4 bytes over the ideal length per stream on average, against ~2
for whole words).
"""

from __future__ import annotations

import constriction
import numpy as np

from ddncodec.errors import FormatError
from ddncodec.priors import Priors

_PAD = b"\xff"
_MAX_TRIM = 8  # bytes tried off the end of a stream


def _model(priors: Priors, layer: int) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(priors.probabilities(layer), perfect=False)


def _words(data: bytes) -> np.ndarray:
    """Stored bytes -> the decoder's words: padded with 0xFF to a whole word, plus one spare word."""
    padded = data + _PAD * (-len(data) % 4 + 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def _decode(data: bytes, model: constriction.stream.model.Categorical, count: int) -> np.ndarray:
    try:
        return constriction.stream.queue.RangeDecoder(_words(data)).decode(model, count)
    except (AssertionError, ValueError) as exc:
        msg = f"corrupt layer stream ({exc})"
        raise FormatError(msg) from exc


def _decodes_to(data: bytes, model: constriction.stream.model.Categorical, symbols: np.ndarray) -> bool:
    try:
        return np.array_equal(_decode(data, model, symbols.size), symbols)
    except FormatError:
        return False


def encode(symbols: np.ndarray, priors: Priors, layer: int) -> bytes:
    """One layer's symbols (any shape, values in [0, K)) -> bytes."""
    model = _model(priors, layer)
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols, model)
    data = encoder.get_compressed().astype(">u4").tobytes()
    # Drop the longest tail that still decodes to the same symbols (verified, so always safe).
    low, high = max(len(data) - _MAX_TRIM, 0), len(data)  # `high` always decodes
    while low < high:
        mid = (low + high) // 2
        if _decodes_to(data[:mid], model, symbols):
            high = mid
        else:
            low = mid + 1
    return data[:high]


def decode(data: bytes, priors: Priors, layer: int, count: int) -> np.ndarray:
    """Bytes -> ``count`` symbols of ``layer`` (int32)."""
    return _decode(data, _model(priors, layer), count).astype(np.int32, copy=False)


def ideal_bits(symbols: np.ndarray, priors: Priors, layer: int) -> float:
    """−Σ log2 p of ``symbols`` under the layer's prior: the length a perfect coder reaches."""
    counts = np.bincount(np.asarray(symbols).ravel(), minlength=priors.tables[layer].size)
    return float(counts @ priors.bits(layer))
