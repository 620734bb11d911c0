"""Shared fixtures: a tiny DDN trained for a few seconds on BSDS crops, so codec tests
run against a real (if weak) model without depending on the shipped one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddncodec.data import to_tensor
from ddncodec.model import CONFIGS, DDN, nearest
from ddncodec.modelfile import CodecModel
from ddncodec.tune import count_priors

DATA = Path(__file__).parent / "data"


def bsds_crops() -> torch.Tensor:
    return to_tensor(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((DATA / "bsds").glob("*.png"))])
    )


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test, so that runs in this process and in subprocesses
    do the same arithmetic (and the toy trains at the same speed everywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model() -> CodecModel:
    """The 'tiny' config trained for 150 steps on 64px crops of the BSDS test images."""
    torch.manual_seed(0)
    crops = bsds_crops()
    network = DDN(CONFIGS["tiny"]).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        top, left = (int(v) for v in torch.randint(0, 65, (2,), generator=gen))
        batch = crops[:, :, top : top + 64, left : left + 64]
        loss = torch.stack(network(batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        network.apply_splits(network.split_decisions(), optimizer)
    network.eval()
    table = count_priors(network, crops, nearest)
    return CodecModel(network, table, {"data": "tests/data/bsds", "steps": 150})


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model: CodecModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    tiny_model.save(path)
    return path


@pytest.fixture()
def kodak_crop() -> Path:
    """A 256x192 crop of kodim23 (evaluation data: used to test, never to train)."""
    return DATA / "kodak" / "kodim23_crop.png"
