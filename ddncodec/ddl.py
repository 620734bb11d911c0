"""The Discrete Distribution Layer (DDL) and its Split-and-Prune bookkeeping.

This is the paper's core, independent of images: a DDL turns a feature map into
``nodes`` candidate outputs at once (one 1x1 conv with ``nodes * node_channels``
outputs); training picks the candidate nearest the target and applies the loss to
it alone. Split-and-Prune keeps every node's hit rate near 1/K: the most used node
is split and the least used one is pruned, the pruned head becoming an exact copy of
the split head (weights *and* Adam moments). The hit counters are registered
buffers, so they survive ``state_dict`` save, load and resume.

Rule and counter updates follow the author's ``SplitableDiscreteDistribution``
(see ``docs/DDN.md``): fire when the total-variation distance to uniform would shrink,
or when a node is used less than half its share.
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK_VALUES = 1 << 19
"""Node outputs ``distances`` holds at once (2 MB of float32: a core's cache, about)."""


class DiscreteDistributionLayer(nn.Module):
    """K candidate outputs from one 1x1 conv, with Split-and-Prune state.

    ``forward(feat)``: (B, C, h, w) -> (B, K, node_channels, h, w).
    """

    def __init__(self, in_channels: int, nodes: int, node_channels: int) -> None:
        super().__init__()
        if nodes < 2:
            msg = f"a DDL needs at least 2 nodes, got {nodes}"
            raise ValueError(msg)
        self.nodes = nodes
        self.node_channels = node_channels
        self.head = nn.Conv2d(in_channels, nodes * node_channels, 1, bias=False)
        # Split-and-Prune state (float64: counts grow past float32's exact range).
        self.register_buffer("hits", torch.zeros(nodes, dtype=torch.float64))
        self.register_buffer("second", torch.zeros(nodes, nodes, dtype=torch.float64))
        self.register_buffer("dist_sum", torch.zeros(nodes, dtype=torch.float64))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feat.shape
        return self.head(feat).view(b, self.nodes, self.node_channels, h, w)

    def chosen(self, feat: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        """The output of node ``symbols - 1`` at every position, zeros where the symbol
        is 0: (B, C, h, w), (B, h, w) -> (B, node_channels, h, w).

        Each node's rows of the 1x1 conv run on its own positions only, so the cost
        follows how many positions took a node, not K: a decoder never computes the
        K - 2 outputs it would throw away (writing all of them made the head the
        slowest part of decoding). Encoder and decoder compose through this same
        function, so their images agree to the bit."""
        b, c, h, w = feat.shape
        rows = feat.permute(0, 2, 3, 1).reshape(-1, c)  # (B*h*w, C), a view on a channels-last map
        nodes = symbols.reshape(-1)
        taken = nodes.nonzero().squeeze(1)
        order = taken[torch.argsort(nodes[taken], stable=True)]  # positions grouped by node
        counts = torch.bincount(nodes[order] - 1, minlength=self.nodes).tolist()
        weight = self.head.weight.view(self.nodes, self.node_channels, c)
        groups = rows[order].split(counts)
        outputs = [group @ weight[node].t() for node, group in enumerate(groups) if len(group)]
        out = rows.new_zeros(nodes.numel(), self.node_channels)
        if outputs:
            out = out.index_copy(0, order, torch.cat(outputs))
        return out.view(b, h, w, self.node_channels).permute(0, 3, 1, 2)

    def distances(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared distance of every node's output to ``target`` at every position:
        (B, C, h, w), (B, node_channels, h, w) -> (B, nodes, h, w).

        A few thousand positions at a time, so the K outputs (K times the target's size)
        never sit in memory at once: on a CPU that is three times faster than
        materialising them (the numbers agree with the full head's to float rounding)."""
        b, c, h, w = feat.shape
        rows = feat.permute(0, 2, 3, 1).reshape(-1, c)
        goal = target.permute(0, 2, 3, 1).reshape(-1, 1, self.node_channels)
        weight = self.head.weight.view(-1, c).t()
        out = rows.new_empty(rows.shape[0], self.nodes)
        step = max(1, CHUNK_VALUES // weight.shape[1])
        for start in range(0, rows.shape[0], step):
            part = slice(start, start + step)
            out[part] = ((rows[part] @ weight).view(-1, self.nodes, self.node_channels) - goal[part]).square_().sum(-1)
        return out.view(b, h, w, self.nodes).permute(0, 3, 1, 2)

    @torch.no_grad()
    def observe(self, dist: torch.Tensor) -> None:
        """Count which node is nearest (and second nearest) for each sample.

        ``dist``: (N, K) distances of N samples to the K nodes.
        """
        dist = dist.detach().to(torch.float64)
        two = dist.topk(2, dim=1, largest=False).indices  # (N, 2)
        self.hits += torch.bincount(two[:, 0], minlength=self.nodes)
        flat = two[:, 0] * self.nodes + two[:, 1]
        self.second += torch.bincount(flat, minlength=self.nodes**2).view(self.nodes, self.nodes)
        self.dist_sum += dist.sum(0)

    def hit_rates(self) -> torch.Tensor:
        total = self.hits.sum()
        return self.hits / total if total > 0 else torch.full_like(self.hits, 1 / self.nodes)

    def split_decision(self) -> tuple[int, int] | None:
        """(split node, prune node) if the rule fires, else None."""
        total = float(self.hits.sum())
        if total <= 0:
            return None
        i_split = int(self.hits.argmax())
        # Among several never-hit nodes, prune the one farthest from the data.
        low = self.hits == self.hits.min()
        i_prune = int(torch.where(low, self.dist_sum, torch.full_like(self.dist_sum, -1.0)).argmax())
        if i_split == i_prune:
            return None
        share = 1.0 / self.nodes
        ps, pd = float(self.hits[i_split]) / total, float(self.hits[i_prune]) / total
        fires = (2 * abs(ps / 2 - share) + pd < ps - pd) or (pd < share / 2)
        return (i_split, i_prune) if fires else None

    @torch.no_grad()
    def split(self, i_split: int, i_prune: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make node ``i_prune`` an exact copy of node ``i_split`` (head rows and the
        optimizer's per-weight moments) and move the counters as if that had always been so."""
        if i_split == i_prune or not (0 <= i_split < self.nodes and 0 <= i_prune < self.nodes):
            msg = f"split needs two different nodes in [0, {self.nodes}), got {i_split} and {i_prune}"
            raise ValueError(msg)
        self._prune_counters(i_prune)
        self._split_counters(i_split, i_prune)

        rows = slice(i_split * self.node_channels, (i_split + 1) * self.node_channels)
        dest = slice(i_prune * self.node_channels, (i_prune + 1) * self.node_channels)
        weight = self.head.weight
        weight[dest] = weight[rows]
        if optimizer is not None:
            state = optimizer.state.get(weight, {})
            for moment in state.values():
                if torch.is_tensor(moment) and moment.shape == weight.shape:
                    moment[dest] = moment[rows]

    def _prune_counters(self, gone: int) -> None:
        """Hand the pruned node's samples to where they would go without it.

        Its hits go to the nodes that were their second nearest (its ``second`` row);
        there they take on that node's own second-nearest pattern. Samples of other
        nodes whose second nearest it was move to those same heirs. Row sums of
        ``second`` stay equal to ``hits`` (the author's invariant)."""
        k = self.nodes
        allowed = 1 - torch.eye(k, dtype=torch.float64, device=self.hits.device)  # never one's own second
        allowed[:, gone] = 0
        heirs = _rows_normalised(self.second[gone : gone + 1] * allowed[gone], allowed[gone : gone + 1])[0]
        column = self.second[:, gone].clone()
        column[gone] = 0
        moved = self.hits[gone].clone()
        self.second[gone] = 0
        self.second[:, gone] = 0
        self.second += (moved * heirs)[:, None] * _rows_normalised(self.second * allowed, allowed)
        self.second += column[:, None] * _rows_normalised(heirs[None] * allowed, allowed)
        self.hits += moved * heirs
        self.hits[gone] = 0

    def _split_counters(self, i_split: int, twin: int) -> None:
        """The twins share the split node's hits and are each other's second nearest."""
        half = self.hits[i_split] / 2
        self.hits[i_split] = self.hits[twin] = half
        column = self.second[:, i_split] / 2
        self.second[:, i_split] = column
        self.second[:, twin] = column
        self.second[i_split] = 0
        self.second[twin] = 0
        self.second[i_split, twin] = self.second[twin, i_split] = half
        self.dist_sum[twin] = self.dist_sum[i_split]

    def try_split(self, optimizer: torch.optim.Optimizer | None = None) -> tuple[int, int] | None:
        decision = self.split_decision()
        if decision is not None:
            self.split(*decision, optimizer)
        return decision


def _rows_normalised(weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Each row scaled to sum 1; an all-zero row takes the (normalised) ``fallback`` row."""
    rows = torch.where(weights.sum(1, keepdim=True) > 0, weights, fallback)
    return rows / rows.sum(1, keepdim=True).clamp(min=1e-300)
