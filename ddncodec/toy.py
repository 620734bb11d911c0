"""The paper's 2-D density toy: a hierarchical DDN on points instead of images.

It uses the image model's parts unchanged (``DiscreteDistributionLayer`` on h = w = 1
feature maps, nearest selection, loss on the chosen node only, residual outputs,
chain dropout, Split-and-Prune with Adam-moment copies) so that a test can show,
with numbers, that they make a DDN: every node alive and used near 1/K, and random
root-to-leaf paths that reproduce the target density (see ``docs/DDN.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ddncodec.ddl import DiscreteDistributionLayer

Choose = Callable[[int, torch.Tensor], torch.Tensor]
"""(layer index, candidates (N, K, 2)) -> chosen node per point (N,), int64."""


def ring_of_gaussians(
    n: int, generator: torch.Generator, modes: int = 8, radius: float = 1.0, std: float = 0.12
) -> torch.Tensor:
    """(n, 2) points from ``modes`` equal Gaussians on a circle: the classic mode-coverage toy."""
    mode = torch.randint(modes, (n,), generator=generator)
    angle = 2 * math.pi * mode.double() / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return (centres + std * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|A-B| - E|A-A'| - E|B-B'|: zero iff the two distributions are equal."""
    cross = torch.cdist(a.double(), b.double()).mean()
    return float(2 * cross - torch.cdist(a.double(), a.double()).mean() - torch.cdist(b.double(), b.double()).mean())


class ToyDDN(nn.Module):
    """``layers`` DDLs of ``nodes`` 2-D outputs each; layer l adds a residual to the
    point chosen by layer l-1, so a path of L indices names one of K^L leaves."""

    def __init__(self, layers: int = 3, nodes: int = 8, width: int = 32, chain_dropout: float = 0.05) -> None:
        super().__init__()
        self.chain_dropout = chain_dropout
        self.start = nn.Parameter(torch.randn(1, width, 1, 1))
        self.embed = nn.ModuleList(nn.Conv2d(2, width, 1) for _ in range(layers))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1))
            for _ in range(layers)
        )
        self.ddls = nn.ModuleList(DiscreteDistributionLayer(width, nodes, 2) for _ in range(layers))

    def walk(self, n: int, choose: Choose) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (chosen nodes (n,), points (n, 2)) after every layer."""
        h = self.start.expand(n, -1, -1, -1)
        x = torch.zeros(n, 2, device=h.device)
        for i, (embed, block, ddl) in enumerate(zip(self.embed, self.blocks, self.ddls, strict=True)):
            h = h + block(h + embed(x[:, :, None, None]))
            candidates = x[:, None] + ddl(h)[..., 0, 0]  # (n, K, 2)
            idx = choose(i, candidates)
            x = candidates[torch.arange(n), idx]
            yield idx, x

    def forward(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Training pass: per layer the nearest node (chain dropout aside), MSE on it alone."""

        def nearest(i: int, candidates: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                dist = (candidates - target[:, None]).pow(2).sum(2)  # (n, K)
                idx = dist.argmin(1)
                if self.training:
                    self.ddls[i].observe(dist)
                    if torch.rand(()) < self.chain_dropout:
                        idx = torch.randint_like(idx, dist.shape[1])
            return idx

        return [F.mse_loss(x, target) for _, x in self.walk(target.shape[0], nearest)]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, layers: int | None = None) -> torch.Tensor:
        """n points, each from a uniformly random path from the root down ``layers`` layers (all by default)."""
        walk = self.walk(n, lambda _, c: torch.randint(c.shape[1], (n,), generator=generator))
        return [x for _, x in walk][(layers or len(self.ddls)) - 1]

    @torch.no_grad()
    def hit_rates(self, target: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """(layers, K): how often each node is the nearest for ``target``, counted afresh
        by the DDLs' own ``observe`` in the training regime (chain-dropout detours included)."""
        saved = [ddl.state_dict() for ddl in self.ddls]
        for buffer in self.buffers():
            buffer.zero_()
        was_training = self.training
        self.train()
        for chunk in target.split(batch):
            self(chunk)
        rates = torch.stack([ddl.hit_rates() for ddl in self.ddls])
        for ddl, state in zip(self.ddls, saved, strict=True):
            ddl.load_state_dict(state)
        self.train(was_training)
        return rates


def train_toy(
    model: ToyDDN, steps: int, seed: int = 0, batch: int = 256, lr: float = 3e-3, split_and_prune: bool = True
) -> int:
    """Adam on fresh ring samples, Split-and-Prune after every step; returns the number of splits."""
    data = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Linear decay to zero: the nodes settle, so the measured hit rates are those of a final model.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    splits = 0
    model.train()
    for _ in range(steps):
        loss = torch.stack(model(ring_of_gaussians(batch, data))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if split_and_prune:
            splits += sum(ddl.try_split(optimizer) is not None for ddl in model.ddls)
    return splits
