"""The Discrete Distribution Layer: Split-and-Prune copies, counters and decision rule."""

from __future__ import annotations

import io
from fractions import Fraction

import pytest
import torch

from ddncodec.ddl import DiscreteDistributionLayer
from ddncodec.model import CONFIGS, DDN


def trained_layer(nodes: int = 5, node_channels: int = 3, steps: int = 3) -> tuple:
    """A DDL after a few Adam steps on a loss that gives every node different moments."""
    torch.manual_seed(0)
    ddl = DiscreteDistributionLayer(6, nodes, node_channels)
    optimizer = torch.optim.Adam(ddl.parameters(), lr=0.1)
    feat = torch.randn(4, 6, 2, 2)
    weights = torch.rand(nodes, node_channels, 1, 1)
    for _ in range(steps):
        optimizer.zero_grad()
        (ddl(feat).pow(2) * weights).sum().backward()
        optimizer.step()
    return ddl, optimizer


def with_hits(hits: list[float], dist_sum: list[float] | None = None) -> DiscreteDistributionLayer:
    ddl = DiscreteDistributionLayer(2, len(hits), 1)
    ddl.hits.copy_(torch.tensor(hits, dtype=torch.float64))
    if dist_sum is not None:
        ddl.dist_sum.copy_(torch.tensor(dist_sum, dtype=torch.float64))
    return ddl


def test_split_copies_head_rows_and_adam_moments_of_that_node_only() -> None:
    ddl, optimizer = trained_layer()
    weight = ddl.head.weight
    before = {"weight": weight.detach().clone()} | {k: v.clone() for k, v in optimizer.state[weight].items()}
    assert before["exp_avg"][3:6].abs().min() > 0  # the moments are real, and differ per node
    assert not torch.equal(before["exp_avg"][3:6], before["exp_avg"][9:12])

    ddl.split(1, 3, optimizer)  # node 1 = rows 3:6 is split, node 3 = rows 9:12 pruned

    after = {"weight": weight.detach()} | optimizer.state[weight]
    for name in ("weight", "exp_avg", "exp_avg_sq"):
        assert torch.equal(after[name][9:12], before[name][3:6]), name
        for rows in (slice(0, 9), slice(12, 15)):
            assert torch.equal(after[name][rows], before[name][rows]), name
    assert torch.equal(after["step"], before["step"])
    out = ddl(torch.randn(2, 6, 3, 3))
    assert torch.equal(out[:, 1], out[:, 3])  # the twins now answer identically


def test_split_rejects_one_node_twice() -> None:
    with pytest.raises(ValueError, match="two different nodes"):
        with_hits([1, 2, 3]).split(1, 1)


def test_counters_are_buffers_that_survive_state_dict() -> None:
    ddl = DiscreteDistributionLayer(4, 6, 3)
    torch.manual_seed(1)
    for _ in range(5):
        ddl.observe(torch.rand(50, 6) * torch.linspace(0.3, 1.0, 6))
        ddl.try_split()
    assert {name for name, _ in ddl.named_buffers()} == {"hits", "second", "dist_sum"}
    buffer = io.BytesIO()
    torch.save(ddl.state_dict(), buffer)
    buffer.seek(0)
    fresh = DiscreteDistributionLayer(4, 6, 3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("hits", "second", "dist_sum"):
        original, loaded = getattr(ddl, name), getattr(fresh, name)
        assert loaded.dtype == torch.float64 and torch.equal(loaded, original), name
    assert float(fresh.hits.sum()) == pytest.approx(250)
    assert fresh.split_decision() == ddl.split_decision()
    assert {"layers.0.ddl.hits", "layers.2.ddl.second"} <= set(DDN(CONFIGS["tiny"]).state_dict())


@pytest.mark.parametrize(
    ("hits", "expected"),
    [
        ([10] * 8, None),  # balanced
        ([12, 8, 11, 9, 10, 10, 9, 11], None),  # near-balanced
        ([0] * 8, None),  # nothing observed yet
        ([30, 10, 10, 10, 10, 10, 10, 0], (0, 7)),  # over 2/K and under 0.5/K
        ([50, 20, 16, 14], (0, 3)),  # split: ps = 2/K with pd = 0.56/K under 1/K
        ([33, 30, 27, 10], (0, 3)),  # prune alone: pd = 0.4/K, though ps - pd < 1/K
        ([45, 20, 20, 15], (0, 3)),  # total variation shrinks: ps - pd > 1/K
        ([35, 25, 22, 18], None),  # ps < 2/K, pd > 0.5/K, ps - pd < 1/K
    ],
)
def test_decision_rule(hits: list[float], expected: tuple[int, int] | None) -> None:
    assert with_hits(hits).split_decision() == expected


def test_decision_prunes_the_farthest_of_the_never_hit_nodes() -> None:
    assert with_hits([10, 0, 5, 0], dist_sum=[1, 7, 2, 9]).split_decision() == (0, 3)
    assert with_hits([10, 0, 5, 0], dist_sum=[1, 9, 2, 7]).split_decision() == (0, 1)


def test_decision_rule_is_the_documented_thresholds() -> None:
    """Split above 2/K with a node under 1/K, or below 2/K when ps - pd > 1/K, or prune under 0.5/K."""
    gen = torch.Generator().manual_seed(3)
    layers = {k: DiscreteDistributionLayer(1, k, 1) for k in range(2, 12)}
    checked = 0
    for _ in range(3000):
        k = int(torch.randint(2, 12, (1,), generator=gen))
        hits = (torch.rand(k, generator=gen) ** 3 * 100).round()
        layers[k].hits.copy_(hits)
        hits = hits.tolist()
        total = sum(hits)
        if total == 0 or max(hits) == min(hits):
            continue
        ps, pd, share = Fraction(int(max(hits)), int(total)), Fraction(int(min(hits)), int(total)), Fraction(1, k)
        if 0 in (ps - 2 * share, pd - share, ps - pd - share, pd - share / 2):
            continue  # exactly on a threshold: float rounding may go either way
        documented = (ps >= 2 * share and pd < share) or (ps < 2 * share and ps - pd > share) or pd < share / 2
        assert (layers[k].split_decision() is not None) == documented, hits
        checked += 1
    assert checked > 2500


def test_pruned_hits_go_to_their_second_nearest_and_twins_share() -> None:
    ddl = DiscreteDistributionLayer(2, 5, 1)
    for nearest, second, samples in [(0, 1, 40), (2, 4, 6), (3, 0, 20), (4, 3, 14)]:
        dist = torch.full((samples, 5), 9.0)
        dist[:, nearest], dist[:, second] = 0.0, 1.0
        ddl.observe(dist)
    assert ddl.hits.tolist() == [40, 0, 6, 20, 14]
    assert ddl.split_decision() == (0, 1)
    ddl.split(0, 2)  # prune node 2: its 6 samples had node 4 as second nearest
    assert ddl.hits.tolist() == [20, 0, 20, 20, 20]
    assert ddl.second[0, 2] == ddl.second[2, 0] == 20  # the twins are each other's second nearest
    assert ddl.second[3, 0] == ddl.second[3, 2] == 10  # node 3's runner-up (node 0) is now either twin
    assert torch.allclose(ddl.second.sum(1), ddl.hits)


def test_split_and_prune_keeps_the_counter_invariants() -> None:
    """Hits always sum to the samples seen, ``second``'s rows sum to ``hits`` (the author's invariant)."""
    gen = torch.Generator().manual_seed(7)
    for k in (2, 3, 8):
        ddl = DiscreteDistributionLayer(2, k, 1)
        seen, splits = 0, 0
        for _ in range(60):
            skew = torch.linspace(0.2, 1.0, k) ** int(torch.randint(1, 6, (1,), generator=gen))
            ddl.observe(torch.rand(32, k, generator=gen) * skew[torch.randperm(k, generator=gen)])
            seen += 32
            splits += ddl.try_split() is not None
            assert float(ddl.hits.sum()) == pytest.approx(seen, rel=1e-12)
            assert torch.allclose(ddl.second.sum(1), ddl.hits, rtol=1e-12, atol=1e-9)
            assert (ddl.hits >= 0).all() and (ddl.second >= 0).all() and ddl.second.diagonal().abs().max() < 1e-9
        assert splits >= 2, k


def test_chosen_outputs_are_the_full_heads_at_their_positions_and_zero_where_kept() -> None:
    torch.manual_seed(1)
    ddl = DiscreteDistributionLayer(6, 5, 3)
    feat = torch.randn(2, 6, 4, 5)
    symbols = torch.randint(0, 6, (2, 4, 5))
    symbols[0, 0, 0], symbols[1, 3, 4] = 0, 5
    full = ddl(feat)  # (B, nodes, node_channels, h, w)
    picked = ddl.chosen(feat, symbols)
    assert picked.shape == (2, 3, 4, 5)
    for b, r, c in torch.cartesian_prod(torch.arange(2), torch.arange(4), torch.arange(5)).tolist():
        s = int(symbols[b, r, c])
        expected = torch.zeros(3) if s == 0 else full[b, s - 1, :, r, c]
        assert torch.allclose(picked[b, :, r, c], expected, atol=1e-6), (b, r, c, s)
    assert ddl.chosen(feat, torch.zeros_like(symbols)).abs().sum() == 0
    picked.sum().backward()  # gradients reach the chosen nodes' rows only
    grad = ddl.head.weight.grad.view(5, 3, 6).abs().sum((1, 2))
    assert ((grad > 0) == torch.isin(torch.arange(1, 6), symbols)).all()


def test_distances_are_the_squared_errors_of_every_node_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    ddl = DiscreteDistributionLayer(6, 5, 3)
    feat, target = torch.randn(2, 6, 7, 9), torch.randn(2, 3, 7, 9)
    expected = (ddl(feat) - target.unsqueeze(1)).pow(2).sum(2)
    whole = ddl.distances(feat, target)
    assert torch.allclose(whole, expected, atol=1e-5)
    monkeypatch.setattr("ddncodec.ddl.CHUNK_VALUES", 16)  # one position per chunk
    assert torch.allclose(ddl.distances(feat, target), whole, atol=1e-6)
