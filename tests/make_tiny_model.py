"""``python tests/make_tiny_model.py`` writes tests/data/tiny.safetensors, the committed test model: the 'tiny' config
trained 150 steps on 64 px crops of the BSDS images in tests/data/bsds (a few seconds).

The suite loads this file instead of training per run, so that the golden files in
tests/data/golden keep meaning something. Retraining changes the model's fingerprint,
and the golden files must then be refreshed too (tests/data/golden/refresh.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddncodec.data import to_tensor
from ddncodec.model import CONFIGS, DDN, nearest
from ddncodec.modelfile import CodecModel
from ddncodec.tune import count_priors

DATA = Path(__file__).resolve().parent / "data"


def bsds_crops() -> torch.Tensor:
    return to_tensor(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((DATA / "bsds").glob("*.png"))])
    )


def train_tiny() -> CodecModel:
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


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_tiny().save(DATA / "tiny.safetensors")
    print(DATA / "tiny.safetensors")
