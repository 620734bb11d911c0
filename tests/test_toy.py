"""The paper's 2-D density toy: our DDL, Split-and-Prune and chain dropout make a DDN.

Every run starts from the same seed (same initial nodes, same data stream); only the
switch under test differs. Measured numbers are in docs/DDN.md.
"""

from __future__ import annotations

import pytest
import torch

from ddncodec.toy import ToyDDN, energy_distance, ring_of_gaussians, train_toy

NODES = 8
STEPS = 600
_runs: dict[tuple[bool, float], tuple[ToyDDN, int]] = {}


def build(chain_dropout: float = 0.05) -> ToyDDN:
    torch.manual_seed(0)
    return ToyDDN(layers=3, nodes=NODES, width=32, chain_dropout=chain_dropout)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def trained(split_and_prune: bool = True, chain_dropout: float = 0.05) -> tuple[ToyDDN, int]:
    """(model after STEPS steps, splits made), trained once per session."""
    key = (split_and_prune, chain_dropout)
    if key not in _runs:
        model = build(chain_dropout)
        _runs[key] = (model, train_toy(model, STEPS, split_and_prune=split_and_prune))
    return _runs[key]


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    return ring_of_gaussians(32768, torch.Generator().manual_seed(99))


def usage(model: ToyDDN, points: torch.Tensor) -> torch.Tensor:
    """(layers, K) hit rates in units of 1/K, as training sees them."""
    torch.manual_seed(5)  # the chain-dropout draws of the measurement
    return model.hit_rates(points) * NODES


def distance(model: ToyDDN, target: torch.Tensor, layers: int | None = None) -> float:
    return energy_distance(model.sample(len(target), torch.Generator().manual_seed(1), layers), target)


def test_split_and_prune_keeps_every_node_alive_and_balanced(held_out) -> None:
    model, splits = trained()
    assert splits >= 10
    rates = usage(model, held_out)
    assert rates.min() > 0.1  # no dead node in any layer (measured: >= 0.18/K)
    assert rates.max() < 3  # and none used more than 3/K (measured: <= 2.12/K)
    assert (rates[0] - 1).abs().max() < 0.1  # the root is uniform (measured: 0.99-1.03/K)


def test_random_paths_reproduce_the_target_density(held_out) -> None:
    model, _ = trained()
    target = held_out[:4096]
    assert distance(model, target) < 0.03  # measured 0.0097
    assert distance(build(), target) > 0.1  # untrained: measured 0.15


def test_without_split_and_prune_nodes_die(held_out) -> None:
    """Same start, same data: a root node that loses the first samples never wins again,
    and its neighbour serves two modes (the paper's dead nodes and density shift)."""
    model, splits = trained(split_and_prune=False)
    assert splits == 0
    root = usage(model, held_out)[0]
    dead = (root == 0).nonzero().flatten().tolist()
    assert len(dead) >= 1
    assert float(model.ddls[0].hit_rates()[dead].max()) * NODES < 0.01  # in all of training, too
    assert root.max() > 1.5  # measured 1.90/K, against 1.03/K with Split-and-Prune


def test_deeper_layers_refine_to_the_sampling_noise(held_out) -> None:
    """K^L leaves, not K codes: each layer brings random-path samples closer to the target,
    down to the distance between two independent target samples. Chain dropout is off here:
    its recovery nodes put 1/K of every random step off the density (see docs/DDN.md)."""
    model, _ = trained(chain_dropout=0.0)
    target = held_out[:4096]
    depths = [distance(model, target, layers) for layers in (1, 2, 3)]
    noise = energy_distance(held_out[4096:8192], target)
    assert depths[0] > depths[1] > depths[2]
    assert depths[2] < 2.5 * noise  # measured 0.0012 against 0.0008
    assert depths[0] > 5 * noise  # the 8 root nodes alone are far from it
