"""One training loop for both filters (``train``), and the model that takes the result
(``attach``): MSE between filter(decoded) and the target on a pool's windows, mirrored
half the time, Adam with a cosine schedule; resumable checkpoints and a JSONL log with
the held-out gain per rung (per detail step)."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddncodec import codec, detail
from ddncodec.atomic import write_atomically
from ddncodec.filtertrain.crops import crop_pool, held_out_crops, spread_rungs
from ddncodec.filtertrain.details import DETAIL_POOL_STEPS, DETAIL_STEP_RANGE, detail_pool, held_out_details
from ddncodec.filtertrain.pools import Log, Pool
from ddncodec.modelfile import CodecModel, half_precision
from ddncodec.options import FilterTrainOptions, TuneOptions
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.tensors import from_uint8
from ddncodec.tune import ladder_on_val, load_images


@dataclass(frozen=True)
class Recipe:
    """What training one of the model's filters needs beyond the loop."""

    config: FilterConfig
    pool: Pool
    held_out: Pool


def _recipe(options: FilterTrainOptions, model: CodecModel, log: Log) -> Recipe:
    if options.detail:
        cells = (detail.BLOCK,) if options.side_inputs else ()
        config = FilterConfig(options.channels, options.blocks, cells, step=options.side_inputs)
        pool = detail_pool(model, options, cells, log)
        return Recipe(config, pool, held_out_details(model, options, cells))
    rungs = options.rungs or spread_rungs(model)
    if options.distill:  # the teacher's output depends on the walk alone, not on the detail step
        rungs = list(dict.fromkeys(codec.Rung(r.layers, r.lam) for r in rungs))
    cells = tuple(s.cell for s in model.config.layers) if options.side_inputs else ()
    pool = crop_pool(model, options, rungs, log)
    return Recipe(FilterConfig(options.channels, options.blocks, cells), pool, held_out_crops(model, options, rungs))


def _logger(path: Path) -> Log:
    def log(entry: dict) -> None:
        with path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)

    return log


def _start(net: PostFilter, optimizer: torch.optim.Optimizer, checkpoint: Path, init: Path | None, log: Log) -> int:
    """The step to start from: a checkpoint's (weights, Adam state, RNG), else 0, from ``init``'s weights if given."""
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        log({"event": "resume", "step": state["step"]})
        return state["step"]
    if init is not None:
        net.widen_from(torch.load(init, weights_only=True)["net"])
        log({"event": "init", "from": str(init)})
    return 0


def _save(checkpoint: Path, net: PostFilter, optimizer: torch.optim.Optimizer, step: int) -> None:
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step}
    write_atomically(checkpoint, lambda tmp: torch.save(state, tmp))


def learning_rate(options: FilterTrainOptions, step: int) -> float:
    """Cosine from lr to lr/100 over ``options.steps``, after a 100-step warm-up."""
    progress = step / options.steps
    return options.lr * min(1.0, (step + 1) / 100) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _validation(step: int, rows: list[tuple[float, float]]) -> dict:
    return {
        "event": "val",
        "step": step,
        "before": [round(b, 3) for b, _ in rows],
        "after": [round(a, 3) for _, a in rows],
        "gain": round(float(np.mean([a - b for b, a in rows])), 3),
    }


def train(options: FilterTrainOptions, model: CodecModel) -> PostFilter:
    """The model's post-filter (or detail filter), trained on ``options`` from its work
    folder's checkpoint, if any, to ``options.steps``."""
    options.work.mkdir(parents=True, exist_ok=True)
    name = "detailfilter" if options.detail else "postfilter"
    log = _logger(options.work / f"{name}.log.jsonl")
    recipe = _recipe(options, model, log)
    torch.manual_seed(options.seed)
    net = PostFilter(recipe.config)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    checkpoint = options.work / f"{name}.ckpt.pt"
    step = _start(net, optimizer, checkpoint, options.init, log)
    started = time.perf_counter()
    while step < options.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(options, step)
        batch = recipe.pool.windows(options.batch, options.window)
        if torch.rand(()) < 0.5:
            batch = batch.mirrored()
        loss = F.mse_loss(net(from_uint8(batch.decoded), batch.flags, batch.steps), from_uint8(batch.target))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            seconds = round(time.perf_counter() - started, 1)
            log({"event": "step", "step": step, "loss": loss.item(), "seconds": seconds})
        if step % options.val_every == 0 or step == options.steps:
            log(_validation(step, recipe.held_out.validate(net)))
        if step % options.checkpoint_every == 0 or step == options.steps:
            _save(checkpoint, net, optimizer, step)
    log({"event": "done", "step": step, "seconds": round(time.perf_counter() - started, 1)})
    return net.eval()


def attach(model: CodecModel, net: PostFilter, options: FilterTrainOptions) -> CodecModel:
    """The codec model with ``net`` as its post-filter (network and filter rounded to
    float16 values: the file stores them in half the bytes; on the shipped model the
    rounding moved validation PSNR by under 0.01 dB) or, with ``options.detail``, as its
    detail filter (the rest untouched, so the core fingerprint, and every file that does
    not run the filter, stays valid); the training facts on its card, and the card's
    validation points of the ladder measured again through it."""
    card = dict(model.card)
    facts = {
        "data": [str(p) for p in options.data],
        "steps": options.steps,
        "batch": options.batch,
        "window": options.window,
    }
    if options.detail:
        pool = {"per_photo": DETAIL_POOL_STEPS, "range": list(DETAIL_STEP_RANGE)}
        card["detail_filter"] = facts | {"config": net.config.to_json(), "pool_steps": pool}
        filtered = model.replace(detailfilter=half_precision(net), card=card)
    else:
        card["postfilter"] = facts | {"pool_crops": options.pool_crops, "pool_crop": options.pool_crop}
        network = half_precision(copy.deepcopy(model.network))  # the caller's model stays as it was
        filtered = model.replace(network=network, postfilter=half_precision(net), card=card)
    if model.ladder and "ladder_on_val" in card:  # its PSNRs were measured through the old filter
        images = load_images(options.val, TuneOptions.val_images, TuneOptions.val_size)
        card["ladder_on_val"] = ladder_on_val(filtered, images)
    return filtered.replace(card=card)
