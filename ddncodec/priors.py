"""The entropy model's integer tables: for every layer, one table per *table set* (one
set per rung of the quality ladder, since a rung's λ decides how often cells keep) and
per context class of ``context``; ``tables[layer][set, context, k]`` > 0 is symbol k's
initial frequency. Pure numpy: counted offline (``tune``), stored as integers in the
model file, and the only thing the coder's probabilities are made from.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ddncodec.context import CONTEXTS, INIT_TOTAL

MAX_SETS = 256  # a .ddn header names its table set in one byte
MAX_CONTEXT_TOTAL = 1 << 40
"""The most a context's initial counts may sum to: the float64 odds are then ratios of
integers far below 2**53, and no sum over contexts, sets or adapted counts nears int64's
end (a hostile 2**61 per count wrapped a table's sum to 0: NaN odds)."""


def _table(i: int, values: np.ndarray) -> np.ndarray:
    """One layer's table as (sets, CONTEXTS, K) int64, or a ValueError: whole numbers
    (integer or integral float arrays), positive, each context summing to at most MAX_CONTEXT_TOTAL."""
    t = np.asarray(values)
    if t.ndim == 1:  # one table for every set and context
        t = np.broadcast_to(t, (1, CONTEXTS, t.size))
    whole = t.dtype.kind in "iu" or (t.dtype.kind == "f" and bool(np.isfinite(t).all()) and (t == np.floor(t)).all())
    shaped = t.ndim == 3 and 1 <= t.shape[0] <= MAX_SETS and t.shape[1] == CONTEXTS and t.shape[2] >= 2
    if not (whole and shaped) or (t <= 0).any() or (t > MAX_CONTEXT_TOTAL).any():
        msg = f"prior table {i} must be positive integers of shape (sets <= {MAX_SETS}, {CONTEXTS}, K >= 2)"
        raise ValueError(msg)
    t = t.astype(np.int64)  # exact: every value is at most MAX_CONTEXT_TOTAL
    if (t.sum(2) > MAX_CONTEXT_TOTAL).any():
        msg = f"prior table {i} has a context whose counts sum past {MAX_CONTEXT_TOTAL:,} (2**40)"
        raise ValueError(msg)
    return np.ascontiguousarray(t)


class Priors:
    def __init__(self, tables: Iterable[np.ndarray]) -> None:
        self.tables = [_table(i, t) for i, t in enumerate(tables)]
        if len({t.shape[0] for t in self.tables}) > 1:
            msg = "prior tables disagree on the number of table sets"
            raise ValueError(msg)

    @property
    def sets(self) -> int:
        return self.tables[0].shape[0]

    def initial(self, layer: int, table_set: int) -> np.ndarray:
        """(CONTEXTS, K) starting counts of one layer in one set."""
        return self.tables[layer][table_set]

    def probabilities(self, layer: int, table_set: int = 0) -> np.ndarray:
        """The set's marginal over contexts, float64 from the integers: the static odds
        the rate-aware encoder prices symbols with, and generation samples from."""
        t = self.tables[layer][table_set].sum(0)
        return t.astype(np.float64) / float(t.sum())

    def bits(self, layer: int, table_set: int = 0) -> np.ndarray:
        """Static code length of each symbol, −log2 p."""
        return -np.log2(self.probabilities(layer, table_set))

    def bits_by_parent(self, layer: int, table_set: int = 0) -> np.ndarray:
        """(2, K) code lengths given whether the co-located cell of the layer before kept
        (row 1) or not (row 0): the part of the context an encoder knows before it chooses
        a whole layer at once (context class = 2·n + parent-kept)."""
        t = self.tables[layer][table_set]
        by_parent = np.stack([t[0::2].sum(0), t[1::2].sum(0)]).astype(np.float64)
        return -np.log2(by_parent / by_parent.sum(1, keepdims=True))

    @classmethod
    def from_counts(cls, counts: Iterable[np.ndarray]) -> Priors:
        """Tables from raw tallies, per layer (sets, CONTEXTS, K), (CONTEXTS, K) or (K,): each context
        scaled to INIT_TOTAL, mixed with its set's marginal so that a rare context is not
        overfitted, plus one so that no symbol is impossible."""
        tables = []
        for c in counts:
            c = np.asarray(c, dtype=np.float64)
            if c.ndim == 1:
                c = np.broadcast_to(c, (1, CONTEXTS, c.size))
            elif c.ndim == 2:
                c = c[None]
            k = c.shape[-1]
            marginal = c.sum(1, keepdims=True)
            marginal = marginal / np.maximum(marginal.sum(-1, keepdims=True), 1.0)
            seen = c.sum(-1, keepdims=True)
            mixed = (c + 16 * marginal) / (seen + 16)  # a context seen n times: weight n / (n + 16)
            mixed = np.where(marginal.sum(-1, keepdims=True) > 0, mixed, 1.0 / k)
            tables.append(np.floor(mixed * (INIT_TOTAL - k)).astype(np.int64) + 1)
        return cls(tables)

    @classmethod
    def uniform(cls, alphabet_sizes: Iterable[int], sets: int = 1) -> Priors:
        return cls(np.ones((sets, CONTEXTS, k), dtype=np.int64) for k in alphabet_sizes)
