"""The encoder's choice of one candidate per cell, layer by layer: distortion plus λ·bits.

Encoding walks the generator over each tile and, per layer and cell, keeps the
candidate with the lowest cost SSE + λ·bits (λ = 0: the plain nearest candidate;
bits = −log2 p under the static odds of the rung's table set, so cells that are
already good take the cheap "keep" symbol); ``settle`` then revisits each cell's
keep-or-refine with its neighbours' choices known.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ddncodec.context import code_lengths, parent_positions, static_lengths
from ddncodec.model import Candidates, Chooser
from ddncodec.modelfile import CodecModel

EFFORTS = (1, 2)  # 1: each layer priced, then settled; 2: with a one-layer lookahead (about 2.3x the encode time)
LOOKAHEAD_LAMBDA = 1.4
"""Effort 2 prices bits this much higher: the lookahead counts what a refinement is
worth to the next layer too, so at the same λ it refines more; 1.4x keeps each rung's
rate within about 7 % of the unsettled effort 1 (26-layer model, 8 validation crops, λ from 0
to 3000); settled effort 1 codes about 10 % fewer bits at each rung."""


def rate_aware(
    target: torch.Tensor,
    model: CodecModel,
    lam: float | torch.Tensor,
    tables: int | torch.Tensor = 0,
    lookahead: int = 0,
    painted: np.ndarray | None = None,
) -> Chooser:
    """Per cell, argmin over candidates of SSE (8-bit levels²) + λ·bits, bits the code
    length under table set ``tables`` given whether the co-located cell of the layer
    before kept (the context model's part that is known before a layer is chosen); then
    (without ``lookahead``) ``settle`` revisits each cell's keep-or-refine with its
    neighbours' choices known.

    ``lam`` and ``tables`` are one value for the batch or one per image ((B,) tensors:
    training prices every crop at its own rung). With ``lookahead`` (the number of
    layers the walk codes; effort 2), every layer but the last of them weighs each cell's
    two cheapest candidates by that cost plus the cheapest the next layer then reaches:
    a refinement also helps the layer after it, which the one-layer price leaves out.
    ``painted`` (H, W) marks the pixels smooth blocks paint over (one image): a cell
    wholly inside them costs its bits alone."""
    specs, b = model.config.layers, target.shape[0]
    weight = torch.as_tensor(lam, dtype=torch.float32, device=target.device).expand(b).reshape(b, 1, 1, 1)
    used, which = torch.as_tensor(tables, dtype=torch.long).expand(b).unique(return_inverse=True)
    bits = []  # per layer, (B, 2, K): each image's code lengths by parent-kept
    lengths = []  # per layer, (B, CONTEXTS, 4, 4, K): each image's static_lengths, for settle
    for i in range(len(specs) if bool(weight.any()) else 0):
        by_set = np.stack([model.priors.bits_by_parent(i, int(t)) for t in used])  # only the sets in use
        bits.append(torch.from_numpy(by_set).float()[which].to(target.device))
        if not lookahead:
            lengths.append(np.stack([static_lengths(model.priors.initial(i, int(t))) for t in used])[which.numpy()])
    chosen: dict[int, torch.Tensor] = {}  # this walk's choices so far, by layer
    images = torch.arange(b, device=target.device)[:, None, None]

    kept_pixels = None if painted is None or not painted.any() else torch.from_numpy(~painted)[None, None].float()

    def priced(layer: int, options: Candidates, above: torch.Tensor | None) -> torch.Tensor:
        """(B, K, rows, cols) costs of ``layer``'s candidates, ``above`` the choices of the layer before."""
        cost = options.cost(target)
        if kept_pixels is not None:
            cell = specs[layer].cell
            cost = cost.masked_fill(F.max_pool2d(kept_pixels, cell) == 0, 0.0)
        if not bits:
            return cost
        kept = parent_kept(layer, cost.shape[2:], above)
        return cost * 255.0**2 + weight * bits[layer][images, kept].permute(0, 3, 1, 2)

    def parent_kept(layer: int, shape: tuple[int, int], above: torch.Tensor | None = None) -> torch.Tensor:
        """(B, rows, cols) 0/1: whether each cell's co-located cell of the layer before kept."""
        above = chosen.get(layer - 1) if above is None else above
        if above is None:
            return torch.zeros(b, *shape, dtype=torch.long, device=target.device)
        cell, previous_cell = specs[layer].cell, specs[layer - 1].cell
        r = torch.from_numpy(parent_positions(shape[0], cell, previous_cell, above.shape[1]))
        c = torch.from_numpy(parent_positions(shape[1], cell, previous_cell, above.shape[2]))
        return (above[:, r][:, :, c] == 0).long()

    def looked_ahead(layer: int, options: Candidates, cost: torch.Tensor) -> torch.Tensor:
        """Per cell, the better of its two cheapest candidates counting the next layer's
        cheapest cost after each (every cell of the image taking its first, then its second)."""
        group = specs[layer].cell // specs[layer + 1].cell
        best = cost.topk(2, dim=1, largest=False)
        nxt = model.network.layers[layer + 1]
        totals = []
        for k in range(2):
            idx = best.indices[:, k]
            image = options.compose(idx)
            after = priced(layer + 1, nxt.candidates(nxt.features(options.trunk, image), image), idx).amin(1)
            totals.append(best.values[:, k] + F.avg_pool2d(after[:, None], group)[:, 0] * group**2)
        return torch.where(totals[1] < totals[0], best.indices[:, 1], best.indices[:, 0])

    def settled(layer: int, cost: torch.Tensor) -> torch.Tensor:
        """``settle`` on the per-cell choice of ``cost`` (B, K, rows, cols), priced as ``priced`` does."""
        kept = parent_kept(layer, cost.shape[2:])
        refine = cost[:, 1:].argmin(1, keepdim=True) + 1
        options = torch.cat([torch.zeros_like(refine), refine], 1)  # keep, and the best refinement
        sse = cost.gather(1, options) - weight * bits[layer][images, kept].permute(0, 3, 1, 2).gather(1, options)
        idx = settle(
            cost.argmin(1).cpu().numpy(),
            refine[:, 0].cpu().numpy(),
            (sse[:, 1] - sse[:, 0]).detach().double().cpu().numpy(),
            kept.cpu().numpy(),
            lengths[layer],
            weight.reshape(b).double().cpu().numpy(),
        )
        return torch.from_numpy(idx).to(cost.device)

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        cost = priced(layer, options, chosen.get(layer - 1))
        ahead = layer + 1 < lookahead and specs[layer].cell % specs[layer + 1].cell == 0
        if ahead:
            idx = looked_ahead(layer, options, cost)
        elif bits and not lookahead:  # effort 2 measured better without it (-0.06 to -0.00 dB with it)
            idx = settled(layer, cost)
        else:
            idx = cost.argmin(1)
        chosen[layer] = idx
        return idx

    return choose


SETTLE_ROWS, SETTLE_COLUMNS = 2, 3
"""``settle`` visits the cells in these interleaved classes: a cell's code length depends
on the cell itself and its neighbours up-left, up, up-right, left and right, so no cell's
depends on two cells of one class, and a class can be priced all at once."""

_REGION = ((0, 1), (0, 0), (0, 2), (1, 0), (1, 1), (1, 2))
"""In ``settle``'s padded code lengths (one column each side), a cell and the cells whose
context it is part of: left, right, and the three below."""


def settle(
    draft: np.ndarray,
    refine: np.ndarray,
    extra_sse: np.ndarray,
    parent_kept: np.ndarray,
    lengths: np.ndarray,
    lam: np.ndarray,
) -> np.ndarray:
    """One layer's choices (B, H, W) after one sweep of iterated conditional modes over
    the per-cell ``draft``: each cell, class by class, takes "keep" (0) or its best
    refinement ``refine`` (costing ``extra_sse`` more squared error than keeping) by
    SSE + λ·bits, the bits those of the cell and of every neighbour whose context it is
    part of, under ``context.code_lengths``. The draft prices a cell without its
    neighbours; flat areas keep in runs, so a keep beside keeps is cheaper than that, and
    refining among them dearer. ``lam`` (B,) per image; ``lengths`` as code_lengths takes."""
    grid = draft.copy()
    _, height, width = grid.shape
    weight = lam[:, None, None]
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for r0 in range(SETTLE_ROWS):
        for c0 in range(SETTLE_COLUMNS):
            members = np.broadcast_to((rows % SETTLE_ROWS == r0) & (cols % SETTLE_COLUMNS == c0), grid.shape)
            totals = []
            for option in (0, refine):
                trial = np.where(members, option, grid)
                own = np.pad(code_lengths(trial, parent_kept, lengths), ((0, 0), (0, 1), (1, 1)))
                region = sum(own[:, dr : dr + height, dc : dc + width] for dr, dc in _REGION)
                totals.append(weight * region)
            totals[1] += extra_sse
            grid = np.where(members, np.where(totals[1] < totals[0], refine, 0), grid)
    return grid
