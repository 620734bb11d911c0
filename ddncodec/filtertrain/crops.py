"""The post-filter's pool (``DecodedCrops``): random training crops encoded at every rung
of the model's ladder (with the rate-aware choice and table set the encoder uses), stored
as 8-bit decodes beside the target, with the decode's refined-cell flags (the filter's
side inputs). One walk per distinct (λ, table set) yields every layer count of it. To
distill, the targets are the model's own post-filter's output instead of the photo."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ddncodec import codec
from ddncodec.atomic import write_atomically
from ddncodec.data import CropSampler, center_crops
from ddncodec.errors import InputError
from ddncodec.filtertrain.pools import ALIGN, POOL_CHUNK, Log, Windows, psnr
from ddncodec.modelfile import CodecModel
from ddncodec.options import FilterTrainOptions
from ddncodec.postfilter import SCALE, PostFilter, refined_flags
from ddncodec.tensors import from_uint8, to_uint8


def spread_rungs(model: CodecModel) -> list[codec.Rung]:
    """The model's ladder if it has one (tuned), else ten rungs from a third of the layers
    at a high λ to all of them at λ = 0, so the filter sees every kind of output before
    a ladder is tuned with it."""
    if model.ladder:
        return list(model.ladder)
    count = len(model.config.layers)
    shares = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0, 1.0)
    lams = (3e4, 1e4, 3000.0, 3000.0, 1000.0, 0.0, 1000.0, 300.0, 300.0, 0.0)
    return [codec.Rung(max(1, round(count * f)), lam) for f, lam in zip(shares, lams, strict=True)]


@torch.inference_mode()
def degrade(model: CodecModel, crops: torch.Tensor, rungs: list[codec.Rung]) -> tuple[torch.Tensor, torch.Tensor]:
    """crops (B, 3, H, W) -> each crop as the codec decodes it at each rung, (B, R, 3, H, W)
    uint8, and the decode's refined flags (``postfilter.refined_flags``), (B, R, L, H/4, W/4)."""
    cells = tuple(s.cell for s in model.config.layers)
    size = crops.shape[-2:]
    out = torch.empty((crops.shape[0], len(rungs), *crops.shape[1:]), dtype=torch.uint8)
    flags = torch.empty((crops.shape[0], len(rungs), len(cells), size[0] // SCALE, size[1] // SCALE), dtype=torch.uint8)
    pricing = [(r.lam, codec.table_set(model, r)) for r in rungs]  # as the encoder prices each rung
    for lam, tables in sorted(set(pricing)):
        deepest = max(r.layers for r, p in zip(rungs, pricing, strict=True) if p == (lam, tables))
        walk = model.network.walk((crops.shape[0], *size), codec.rate_aware(crops, model, lam, tables), deepest)
        chosen = []
        for layer, (idx, image) in enumerate(walk, 1):
            chosen.append(idx)
            for i, r in enumerate(rungs):
                if pricing[i] == (lam, tables) and r.layers == layer:
                    out[:, i] = to_uint8(image)
                    flags[:, i] = refined_flags(chosen, cells, size)
    return out, flags


@dataclass(frozen=True)
class DecodedCrops:
    """Crops decoded at R rungs: decoded (N, R, 3, S, S) and flags (N, R, L, S/4, S/4) uint8;
    targets (N, 3, S, S), the photos, or (N, R, 3, S, S), a teacher's output per rung."""

    targets: torch.Tensor
    decoded: torch.Tensor
    flags: torch.Tensor

    def _target(self, crop: int | torch.Tensor, rung: int | torch.Tensor) -> torch.Tensor:
        return self.targets[crop, rung] if self.targets.dim() == 5 else self.targets[crop]

    def windows(self, batch: int, window: int) -> Windows:
        n, r, _, size, _ = self.decoded.shape
        pick = torch.randint(n, (batch,))
        rung = torch.randint(r, (batch,))
        top, left = (torch.randint((size - window) // ALIGN + 1, (2, batch)) * ALIGN).tolist()
        corners = list(zip(pick, rung, top, left, strict=True))
        f, q = window // SCALE, SCALE
        return Windows(
            torch.stack([self.decoded[p, u, :, t : t + window, s : s + window] for p, u, t, s in corners]),
            torch.stack([self._target(p, u)[:, t : t + window, s : s + window] for p, u, t, s in corners]),
            torch.stack([self.flags[p, u, :, t // q : t // q + f, s // q : s // q + f] for p, u, t, s in corners]),
        )

    @torch.inference_mode()
    def validate(self, net: PostFilter) -> list[tuple[float, float]]:
        """Per rung: (mean PSNR decoded, mean PSNR filtered) over the crops."""
        net.eval()
        rows = []
        for r in range(self.decoded.shape[1]):
            before, after = [], []
            for i in range(self.decoded.shape[0]):
                filtered = to_uint8(net(from_uint8(self.decoded[i : i + 1, r]), self.flags[i : i + 1, r]))
                before.append(psnr(self.decoded[i, r], self._target(i, r)))
                after.append(psnr(filtered[0], self._target(i, r)))
            rows.append((float(np.mean(before)), float(np.mean(after))))
        net.train()
        return rows


def crop_pool(model: CodecModel, options: FilterTrainOptions, rungs: list[codec.Rung], log: Log) -> DecodedCrops:
    """The post-filter's training pool, built or resumed chunk by chunk; to distill, its
    targets are the model's own post-filter's output (``_taught``)."""
    sampler = CropSampler(options.data, options.pool_crop, seed=options.seed + 1)
    targets, decoded, flags = [], [], []
    for start in range(0, options.pool_crops, POOL_CHUNK):
        crops = sampler.batch(POOL_CHUNK)  # drawn even when the chunk is on disk, so the stream stays the same
        path = options.work / f"pool-{start:05d}.pt"
        saved = torch.load(path, weights_only=True) if path.exists() else {}
        if "flags" not in saved:  # not built yet (or by a version that kept no flags)
            t0 = time.perf_counter()
            images, refined = degrade(model, crops, rungs)
            saved = {"target": to_uint8(crops), "decoded": images, "flags": refined}
            write_atomically(path, lambda tmp, s=saved: torch.save(s, tmp))
            log({"event": "pool", "crops": start + POOL_CHUNK, "seconds": round(time.perf_counter() - t0, 1)})
        targets.append(saved["target"])
        decoded.append(saved["decoded"])
        flags.append(saved["flags"])
    pool = DecodedCrops(torch.cat(targets), torch.cat(decoded), torch.cat(flags))
    if options.distill:
        return DecodedCrops(_taught(model, pool, options, log), pool.decoded, pool.flags)
    return pool


@torch.inference_mode()
def _taught(model: CodecModel, pool: DecodedCrops, options: FilterTrainOptions, log: Log) -> torch.Tensor:
    """The model's own post-filter on every pool image (N, R, 3, S, S) uint8: the targets
    of a distilled filter, computed once and kept in the work folder."""
    if model.postfilter is None:
        msg = "--distill: the model has no post-filter to learn from"
        raise InputError(msg)
    path = options.work / "taught.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    t0 = time.perf_counter()
    taught = torch.empty_like(pool.decoded)
    for i in range(pool.decoded.shape[0]):
        taught[i] = to_uint8(model.postfilter(from_uint8(pool.decoded[i]), pool.flags[i]))
    write_atomically(path, lambda tmp: torch.save(taught, tmp))
    images = pool.decoded.shape[0] * pool.decoded.shape[1]
    log({"event": "taught", "images": images, "seconds": round(time.perf_counter() - t0, 1)})
    return taught


def held_out_crops(model: CodecModel, options: FilterTrainOptions, rungs: list[codec.Rung]) -> DecodedCrops:
    """Center crops of the validation photos decoded at the pool's rungs."""
    photos = center_crops(options.val, options.pool_crop, options.val_images)
    decoded, flags = degrade(model, photos, rungs)
    return DecodedCrops(to_uint8(photos), decoded, flags)
