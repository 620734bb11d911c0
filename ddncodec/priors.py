"""Per-layer integer frequency tables: the entropy coder's model of the DDN indices.

Tables are counted by encoding training crops after training, smoothed so that no
symbol has zero mass, and stored as integers in the model file. Everything the
entropy coder sees is derived from these integers, so encoder and decoder build
bit-identical probability tables on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ddncodec.model import DDN, Candidates

TABLE_TOTAL = 1 << 16  # every table is scaled to this total before smoothing


class Priors:
    """One integer table per layer; ``tables[l][k]`` > 0 is symbol k's frequency."""

    def __init__(self, tables: Iterable[np.ndarray]) -> None:
        self.tables = [np.asarray(t, dtype=np.int64) for t in tables]
        for i, t in enumerate(self.tables):
            if t.ndim != 1 or t.size < 2 or (t <= 0).any():
                msg = f"prior table {i} must be a vector of positive integers"
                raise ValueError(msg)

    def probabilities(self, layer: int) -> np.ndarray:
        """float64 probabilities derived from the integers only (bit-identical everywhere)."""
        t = self.tables[layer]
        return t.astype(np.float64) / float(t.sum())

    def bits(self, layer: int) -> np.ndarray:
        """Ideal code length of each symbol, -log2 p."""
        return -np.log2(self.probabilities(layer))

    @classmethod
    def from_counts(cls, counts: Iterable[np.ndarray]) -> Priors:
        """Scale raw counts to TABLE_TOTAL and add one, so no symbol is impossible."""
        tables = []
        for c in counts:
            c = np.asarray(c, dtype=np.float64)
            scaled = np.floor(c / max(c.sum(), 1.0) * (TABLE_TOTAL - c.size)).astype(np.int64)
            tables.append(scaled + 1)
        return cls(tables)

    @classmethod
    def uniform(cls, alphabet_sizes: Iterable[int]) -> Priors:
        return cls(np.ones(k, dtype=np.int64) for k in alphabet_sizes)


Chooser = Callable[[int, Candidates], torch.Tensor]


@torch.no_grad()
def count(model: DDN, crops: torch.Tensor, choose: Callable[[torch.Tensor], Chooser], batch: int = 8) -> Priors:
    """Encode ``crops`` (B, 3, H, W) with ``choose(target)`` and tally the symbols per layer."""
    counts = [np.zeros(s.k, dtype=np.int64) for s in model.config.layers]
    for start in range(0, crops.shape[0], batch):
        target = crops[start : start + batch]
        walk = model.walk((target.shape[0], *target.shape[-2:]), choose(target))
        for layer, (idx, _) in enumerate(walk):
            counts[layer] += np.bincount(idx.flatten().numpy(), minlength=counts[layer].size)
    return Priors.from_counts(counts)


def nearest(target: torch.Tensor) -> Chooser:
    """The plain DDN encoder: per cell, the candidate nearest the target."""
    return lambda _layer, options: options.cost(target).argmin(1)
