"""models/training holds what resumes the shipped model (models/training/README.md): each
filter checkpoint there holds the very weights the model file ships, rounded to float16; the network's
is the same run further on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ddncodec import checkpoint
from ddncodec.modelfile import CodecModel, load
from ddncodec.postfilter import PostFilter

TRAINING = Path(__file__).parents[1] / "models" / "training"


@pytest.fixture(scope="module")
def shipped() -> CodecModel:
    return load("default")


def assert_ships_as(weights: dict[str, torch.Tensor], net: torch.nn.Module) -> None:
    params = dict(net.named_parameters())
    assert params
    for name, param in params.items():
        assert torch.equal(weights[name].half().float(), param.detach().float()), name


def test_the_network_checkpoint_continues_the_shipped_run(shipped: CodecModel) -> None:
    """The tracked network state is the shipped run's, 1,000 steps on (models/training/README.md):
    the same network, a later step, a log that passes the shipped step, and Adam moments that load."""
    files = checkpoint.RunFiles(TRAINING / "base26.safetensors")
    state = checkpoint.load(files)  # Adam moments of the same step
    assert shipped.card["steps"] == 4129 and state["step"] == 5129
    assert checkpoint.config(files, state) == shipped.config
    steps = [json.loads(line)["step"] for line in files.log.read_text().splitlines() if line.strip()]
    assert shipped.card["steps"] in steps and max(steps) == state["step"]


@pytest.mark.parametrize(
    ("name", "slot", "step"),
    [("postfilter_v10.ckpt.pt", "postfilter", 8000), ("detailfilter_v13.ckpt.pt", "detailfilter", 6000)],
)
def test_the_filter_checkpoints_resume_the_shipped_filters(
    shipped: CodecModel, name: str, slot: str, step: int
) -> None:
    state = torch.load(TRAINING / name, weights_only=True)
    assert set(state) == {"net", "optimizer", "rng", "step"} and state["step"] == step  # what train-filter resumes
    net: PostFilter = getattr(shipped, slot)
    assert_ships_as(state["net"], net)
    optimizer = torch.optim.Adam(net.parameters())
    optimizer.load_state_dict(state["optimizer"])
    assert len(optimizer.state) == len(list(net.parameters()))
