"""How a training run measures its network on held-out crops: PSNR after every layer of the
plain nearest walk, and the real encoder's rate points, comparable across steps and runs."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ddncodec import metrics
from ddncodec.codec import encode_pixels, ladder
from ddncodec.model import DDN, nearest
from ddncodec.modelfile import CodecModel
from ddncodec.tensors import to_array, to_uint8


def psnr(x: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per image, ``metrics.psnr`` of (B, 3, H, W) model-range images rounded to 8 bits as the
    decoder rounds them (a perfect match is infinite)."""
    pairs = zip(to_uint8(x).cpu().numpy(), to_uint8(target).cpu().numpy(), strict=True)
    return [metrics.psnr(a, b) for a, b in pairs]


@torch.no_grad()
def validate(network: DDN, crops: torch.Tensor, batch: int = 8) -> list[float]:
    """Mean PSNR after every layer on the validation crops (nearest choice)."""
    was_training = network.training
    device = next(network.parameters()).device
    network.eval()
    sums = np.zeros(len(network.config.layers))
    for start in range(0, crops.shape[0], batch):
        target = crops[start : start + batch].to(device)
        walk = network.walk((target.shape[0], *target.shape[-2:]), nearest(target))
        for i, (_, x) in enumerate(walk):
            sums[i] += sum(psnr(x, target))
    network.train(was_training)
    return [round(v, 3) for v in sums / crops.shape[0]]


def rate_points(network: DDN, pricing: CodecModel, crops: torch.Tensor) -> list[list[float]]:
    """Mean [bpp, PSNR] of ``crops`` coded by the real encoder at every λ > 0 rung of
    ``pricing``'s ladder, with ``network`` in its place (no post-filter): the rate-
    distortion the training is for, comparable across steps and runs."""
    model = pricing.replace(network=copy.deepcopy(network).cpu().eval(), postfilter=None)
    pixels = [to_array(to_uint8(c[None])) for c in crops.cpu()]
    points = []
    for rung in (r for r in ladder(pricing) if r.lam > 0):
        coded = [encode_pixels(p, "RGB", model, rung) for p in pixels]
        points.append(
            [round(float(np.mean([e.bpp for e in coded])), 4), round(float(np.mean([e.psnr for e in coded])), 3)]
        )
    return points
