"""Training the post-filter of a codec model on what its decoder really outputs.

1. A pool: random training crops encoded at every rung of the model's ladder (and
   the rate-aware choice and table set the encoder uses), stored as 8-bit decoded images beside the target,
   with the decode's refined-cell flags (the filter's side inputs). One walk per
   distinct (λ, table set) yields every layer count of it. Built in chunks, so an interrupted
   build resumes.
2. Training: MSE between filter(decoded) and the photo (or, to distill, the model's own
   post-filter's output on the whole pool crop) on random 32-px-aligned windows
   of the pool (aligned, so the cell grid sits where it does in a real decode), Adam
   with a cosine schedule; resumable checkpoints and a JSONL log with validation gains
   per rung on held-out photos. ``--init`` starts from an earlier filter, widened to
   side inputs or more blocks it did not have (``PostFilter.widen_from``).
"""

from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ddncodec import codec
from ddncodec.atomic import write_atomically
from ddncodec.data import CropSampler, center_crops
from ddncodec.modelfile import CodecModel, half_precision
from ddncodec.options import FilterTrainOptions, TuneOptions
from ddncodec.postfilter import SCALE, FilterConfig, PostFilter, from_uint8, refined_flags, to_uint8
from ddncodec.tune import ladder_on_val, load_images


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


def build_pool(
    model: CodecModel, options: FilterTrainOptions, rungs: list[codec.Rung], log
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(targets (N, 3, S, S), decoded (N, R, 3, S, S), refined flags (N, R, L, S/4, S/4)),
    all uint8, built or resumed chunk by chunk."""
    sampler = CropSampler(options.data, options.pool_crop, seed=options.seed + 1)
    chunk = 32
    targets, decoded, flags = [], [], []
    for start in range(0, options.pool_crops, chunk):
        crops = sampler.batch(chunk)  # drawn even when the chunk is on disk, so the stream stays the same
        path = options.work / f"pool-{start:05d}.pt"
        saved = torch.load(path, weights_only=True) if path.exists() else {}
        if "flags" not in saved:  # not built yet (or by a version that kept no flags)
            t0 = time.perf_counter()
            images, refined = degrade(model, crops, rungs)
            saved = {"target": to_uint8(crops), "decoded": images, "flags": refined}
            write_atomically(path, lambda tmp, s=saved: torch.save(s, tmp))
            log({"event": "pool", "crops": start + chunk, "seconds": round(time.perf_counter() - t0, 1)})
        targets.append(saved["target"])
        decoded.append(saved["decoded"])
        flags.append(saved["flags"])
    return torch.cat(targets), torch.cat(decoded), torch.cat(flags)


@torch.inference_mode()
def _taught(
    model: CodecModel, decoded: torch.Tensor, flags: torch.Tensor, options: FilterTrainOptions, log
) -> torch.Tensor:
    """The model's own post-filter on every pool image (N, R, 3, S, S) uint8: the targets
    of a distilled filter, computed once and kept in the work folder."""
    assert model.postfilter is not None, "distilling needs a model with a post-filter"
    path = options.work / "taught.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    t0 = time.perf_counter()
    taught = torch.empty_like(decoded)
    for i in range(decoded.shape[0]):
        taught[i] = to_uint8(model.postfilter(from_uint8(decoded[i]), flags[i]))
    write_atomically(path, lambda tmp: torch.save(taught, tmp))
    log(
        {
            "event": "taught",
            "images": decoded.shape[0] * decoded.shape[1],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    return taught


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return 10 * math.log10(255**2 / mse)


@torch.inference_mode()
def validate(
    net: PostFilter, targets: torch.Tensor, decoded: torch.Tensor, flags: torch.Tensor
) -> list[tuple[float, float]]:
    """Per rung: (mean PSNR decoded, mean PSNR filtered) over the validation crops."""
    net.eval()
    rows = []
    for r in range(decoded.shape[1]):
        before, after = [], []
        for i in range(targets.shape[0]):
            filtered = to_uint8(net(from_uint8(decoded[i : i + 1, r]), flags[i : i + 1, r]))
            before.append(_psnr(decoded[i, r], targets[i]))
            after.append(_psnr(filtered[0], targets[i]))
        rows.append((float(np.mean(before)), float(np.mean(after))))
    net.train()
    return rows


def train(options: FilterTrainOptions, model: CodecModel) -> PostFilter:
    options.work.mkdir(parents=True, exist_ok=True)
    log_path = options.work / "postfilter.log.jsonl"

    def log(entry: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)

    rungs = options.rungs or spread_rungs(model)
    if options.distill:  # the teacher's output depends on the walk alone, not on the detail step
        rungs = list(dict.fromkeys(codec.Rung(r.layers, r.lam) for r in rungs))
    photos, decoded, flags = build_pool(model, options, rungs, log)
    targets = _taught(model, decoded, flags, options, log) if options.distill else photos
    val_targets_f = center_crops(options.val, options.pool_crop, options.val_images)
    val_decoded, val_flags = degrade(model, val_targets_f, rungs)
    val_targets = to_uint8(val_targets_f)

    torch.manual_seed(options.seed)
    cells = tuple(s.cell for s in model.config.layers) if options.side_inputs else ()
    net = PostFilter(FilterConfig(options.channels, options.blocks, cells))
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    ckpt_path = options.work / "postfilter.ckpt.pt"
    step = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        log({"event": "resume", "step": step})
    elif options.init is not None:
        net.widen_from(torch.load(options.init, weights_only=True)["net"])
        log({"event": "init", "from": str(options.init)})

    def checkpoint() -> None:
        state = {
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
        }
        write_atomically(ckpt_path, lambda tmp: torch.save(state, tmp))

    n, r, _, size, _ = decoded.shape
    cells = (size - options.window) // 32 + 1
    started = time.perf_counter()
    while step < options.steps:
        for group in optimizer.param_groups:  # cosine from lr to lr/100 after a 100-step warm-up
            progress = step / options.steps
            group["lr"] = (
                options.lr * min(1.0, (step + 1) / 100) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
            )
        pick = torch.randint(n, (options.batch,))
        rung = torch.randint(r, (options.batch,))
        top, left = (torch.randint(cells, (2, options.batch)) * 32).tolist()
        w = options.window
        x = torch.stack(
            [decoded[p, q, :, t : t + w, s : s + w] for p, q, t, s in zip(pick, rung, top, left, strict=True)]
        )
        y = torch.stack(
            [
                (targets[p, q] if options.distill else targets[p])[:, t : t + w, s : s + w]
                for p, q, t, s in zip(pick, rung, top, left, strict=True)
            ]
        )
        f, q = w // SCALE, SCALE
        side = torch.stack(
            [
                flags[p, r_, :, t // q : t // q + f, s // q : s // q + f]
                for p, r_, t, s in zip(pick, rung, top, left, strict=True)
            ]
        )
        if torch.rand(()) < 0.5:  # flips keep a 32-aligned window's cell grid aligned
            x, y, side = x.flip(-1), y.flip(-1), side.flip(-1)
        loss = F.mse_loss(net(from_uint8(x), side), from_uint8(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log(
                {"event": "step", "step": step, "loss": loss.item(), "seconds": round(time.perf_counter() - started, 1)}
            )
        if step % options.val_every == 0 or step == options.steps:
            rows = validate(net, val_targets, val_decoded, val_flags)
            log(
                {
                    "event": "val",
                    "step": step,
                    "before": [round(b, 3) for b, _ in rows],
                    "after": [round(a, 3) for _, a in rows],
                    "gain": round(float(np.mean([a - b for b, a in rows])), 3),
                }
            )
        if step % options.checkpoint_every == 0 or step == options.steps:
            checkpoint()
    log({"event": "done", "step": step, "seconds": round(time.perf_counter() - started, 1)})
    return net.eval()


def attach(model: CodecModel, net: PostFilter, options: FilterTrainOptions) -> CodecModel:
    """The codec model with ``net`` as its post-filter, network and filter rounded to float16
    values (the file stores them in half the bytes; on the shipped model the rounding moved
    validation PSNR by under 0.01 dB), the training facts on its card, and the card's
    validation points of the ladder measured again through them."""
    card = dict(model.card)
    card["postfilter"] = {
        "data": [str(p) for p in options.data],
        "pool_crops": options.pool_crops,
        "pool_crop": options.pool_crop,
        "steps": options.steps,
        "batch": options.batch,
        "window": options.window,
    }
    network = half_precision(copy.deepcopy(model.network))  # the caller's model stays as it was
    filtered = model.replace(network=network, postfilter=half_precision(net), card=card)
    if model.ladder and "ladder_on_val" in card:  # its PSNRs were measured through the old filter
        images = load_images(options.val, TuneOptions.val_images, TuneOptions.val_size)
        card["ladder_on_val"] = ladder_on_val(filtered, images)
    return filtered.replace(card=card)
