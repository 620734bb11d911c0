"""Training a codec model's filters on what its decoder really outputs: the post-filter,
or (``FilterTrainOptions.detail``) the detail filter that runs after the detail layer.
One training loop (``train``); the two differ only in the pool of decodes it learns
from, the held-out decodes it measures, and the slot of the model the result takes
(``attach``).

1. Pools, built in chunks in the work folder, so that an interrupted build resumes:
   - post-filter (``DecodedCrops``): random training crops encoded at every rung of the
     model's ladder (with the rate-aware choice and table set the encoder uses), stored as
     8-bit decodes beside the target, with the decode's refined-cell flags (the filter's
     side inputs). One walk per distinct (λ, table set) yields every layer count of it.
     To distill, the targets are the model's own post-filter's output instead of the photo.
   - detail filter (``DetailDecodes``): the training photos, whole, walked as the ladder's
     detail rungs walk them (with the post-filter where the encoder takes it), then the
     detail layer at DETAIL_POOL_STEPS random steps each, log-uniform in DETAIL_STEP_RANGE;
     the filter reads which 8×8 blocks that layer coded and the step.
2. Training: MSE between filter(decoded) and the target on random 32-px-aligned windows
   (aligned, so the cell and block grids sit where they do in a real decode), mirrored
   half the time, Adam with a cosine schedule; resumable checkpoints and a JSONL log with
   the validation gain per rung (per detail step) on held-out photos. ``--init`` starts
   from an earlier filter, widened to side inputs or more blocks it did not have
   (``PostFilter.widen_from``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ddncodec import codec, detail
from ddncodec.atomic import write_atomically
from ddncodec.data import CropSampler, center_crops, list_images, load_rgb
from ddncodec.errors import InputError
from ddncodec.modelfile import CodecModel, half_precision
from ddncodec.options import FilterTrainOptions, TuneOptions
from ddncodec.postfilter import SCALE, FilterConfig, PostFilter, refined_flags
from ddncodec.tensors import from_uint8, to_uint8
from ddncodec.tune import ladder_on_val, load_images

ALIGN = 32  # px: windows start on the DDN unit, so cell and block grids sit as in a decode
POOL_CHUNK = 32  # crops (post-filter) or photos (detail filter) per pool file
DETAIL_POOL_STEPS = 3  # detail steps per training photo
DETAIL_STEP_RANGE = (8, 140)  # log-uniform: the ladder's detail steps and a margin
DETAIL_VAL_STEPS = (100, 37, 8)  # q4, q6 and q8's steps

Log = Callable[[dict], None]


@dataclass(frozen=True)
class Windows:
    """A training batch: decoded windows (B, 3, w, w) uint8, what the filter should make of
    them, its side inputs (B, L, w/4, w/4) and, for the detail filter, each one's step (B,)."""

    decoded: torch.Tensor
    target: torch.Tensor
    flags: torch.Tensor
    steps: torch.Tensor | None = None

    def mirrored(self) -> Windows:
        """Flipped left to right: a 32-aligned window's cell and block grids stay aligned."""
        return Windows(self.decoded.flip(-1), self.target.flip(-1), self.flags.flip(-1), self.steps)


class Pool(Protocol):
    """Decodes a filter learns from (``windows``) or is measured on (``validate``)."""

    def windows(self, batch: int, window: int) -> Windows: ...

    def validate(self, net: PostFilter) -> list[tuple[float, float]]: ...


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return 10 * math.log10(255**2 / mse)


# ------------------------------------------------------------------ post-filter pool


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
                before.append(_psnr(self.decoded[i, r], self._target(i, r)))
                after.append(_psnr(filtered[0], self._target(i, r)))
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


# ------------------------------------------------------------------ detail-filter pool


@dataclass(frozen=True)
class DetailDecode:
    """A photo (3, H, W) uint8, its decode with the detail layer at ``step`` and which 8×8
    blocks that layer coded, (rows, cols) uint8 over the image padded to whole blocks."""

    truth: torch.Tensor
    decoded: torch.Tensor
    coded: torch.Tensor
    step: int


@dataclass(frozen=True)
class DetailDecodes:
    """Photos decoded with the detail layer; ``cells`` are the detail filter's (``(8,)``,
    or none for a pixels-only filter)."""

    entries: list[DetailDecode]
    cells: tuple[int, ...]

    def _flags(self, coded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return refined_flags([coded], self.cells, size)

    def windows(self, batch: int, window: int) -> Windows:
        decoded, target, coded, steps = [], [], [], []
        for pick in torch.randint(len(self.entries), (batch,)).tolist():
            entry = self.entries[pick]
            height, width = entry.truth.shape[-2:]
            top = int(torch.randint((height - window) // ALIGN + 1, ())) * ALIGN
            left = int(torch.randint((width - window) // ALIGN + 1, ())) * ALIGN
            rows, cols = slice(top, top + window), slice(left, left + window)
            decoded.append(entry.decoded[:, rows, cols])
            target.append(entry.truth[:, rows, cols])
            b = detail.BLOCK
            coded.append(entry.coded[top // b : (top + window) // b, left // b : (left + window) // b])
            steps.append(entry.step)
        flags = self._flags(torch.stack(coded), (window, window))
        return Windows(torch.stack(decoded), torch.stack(target), flags, torch.tensor(steps))

    @torch.inference_mode()
    def validate(self, net: PostFilter) -> list[tuple[float, float]]:
        """Per step, in the order first met: (mean PSNR decoded, mean PSNR filtered)."""
        net.eval()
        by_step: dict[int, list[tuple[float, float]]] = {}
        for e in self.entries:
            flags = self._flags(e.coded[None], e.decoded.shape[-2:])
            filtered = to_uint8(net(from_uint8(e.decoded[None]), flags, e.step))[0]
            by_step.setdefault(e.step, []).append((_psnr(e.decoded, e.truth), _psnr(filtered, e.truth)))
        net.train()
        return [(float(np.mean([b for b, _ in v])), float(np.mean([a for _, a in v]))) for v in by_step.values()]


def detail_walk(model: CodecModel, rungs: list[codec.Rung] | None) -> codec.Rung:
    """The walk under the detail layer: that of the first detail rung of ``rungs`` (by
    default the model's ladder); the ladder's detail rungs all share q1's."""
    base = next((r for r in rungs or codec.ladder(model) if r.detail), None)
    if base is None:
        msg = "--detail: the model's ladder has no detail rung to walk as"
        raise InputError(msg)
    return codec.Rung(base.layers, base.lam)


def _with_detail(model: CodecModel, photo: np.ndarray, walk: codec.Rung, steps: list[int]) -> list[DetailDecode]:
    """``photo`` as the encoder codes it on ``walk``, then with the detail layer at each step."""
    walked = codec.encode_pixels(photo, "RGB", model, walk).pixels
    truth = _planar(photo)  # one tensor for every step: stored once in a pool file
    out = []
    for step in steps:
        levels = detail.residual_levels(photo, walked, step)
        coded = torch.from_numpy(detail.coded_blocks(levels).astype(np.uint8))
        out.append(DetailDecode(truth, _planar(detail.apply(walked, levels, step)), coded, step))
    return out


def _planar(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 (a copy: a photo's array may be read-only)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def detail_pool(model: CodecModel, options: FilterTrainOptions, cells: tuple[int, ...], log: Log) -> DetailDecodes:
    """The detail filter's training pool: every photo of ``options.data`` at
    DETAIL_POOL_STEPS random steps, built or resumed chunk by chunk."""
    walk = detail_walk(model, options.rungs)
    paths = list_images(options.data)
    rng = np.random.default_rng(options.seed)  # every photo's steps drawn at once: a resumed build draws the same
    steps = np.exp(rng.uniform(*np.log(DETAIL_STEP_RANGE), (len(paths), DETAIL_POOL_STEPS))).round().astype(int)
    entries = []
    for start in range(0, len(paths), POOL_CHUNK):
        path = options.work / f"detail-pool-{start:05d}.pt"
        if not path.exists():
            t0 = time.perf_counter()
            chunk = []
            for photo, photo_steps in zip(
                paths[start : start + POOL_CHUNK], steps[start : start + POOL_CHUNK], strict=True
            ):
                chunk += _with_detail(model, _photo(photo, options.window), walk, photo_steps.tolist())
            saved = {name: [getattr(e, name) for e in chunk] for name in ("truth", "decoded", "coded", "step")}
            write_atomically(path, lambda tmp, s=saved: torch.save(s, tmp))
            images = min(start + POOL_CHUNK, len(paths))
            log({"event": "pool", "images": images, "seconds": round(time.perf_counter() - t0, 1)})
        saved = torch.load(path, weights_only=True)
        fields = zip(saved["truth"], saved["decoded"], saved["coded"], saved["step"], strict=True)
        entries += [DetailDecode(*entry) for entry in fields]
    return DetailDecodes(entries, cells)


def _photo(path: Path, window: int) -> np.ndarray:
    photo = load_rgb(path)
    if min(photo.shape[:2]) < window:
        msg = f"{path}: {photo.shape[1]}x{photo.shape[0]} is smaller than the {window}px window"
        raise InputError(msg)
    return photo


def held_out_details(model: CodecModel, options: FilterTrainOptions, cells: tuple[int, ...]) -> DetailDecodes:
    """The first validation photos, whole (cut to whole 8×8 blocks), at DETAIL_VAL_STEPS."""
    walk = detail_walk(model, options.rungs)
    entries = []
    for path in list_images(options.val)[: options.val_images]:
        photo = load_rgb(path)
        height, width = (n - n % detail.BLOCK for n in photo.shape[:2])
        for e in _with_detail(model, photo, walk, list(DETAIL_VAL_STEPS)):
            cut = DetailDecode(e.truth[:, :height, :width], e.decoded[:, :height, :width], e.coded, e.step)
            entries.append(cut)
    return DetailDecodes(entries, cells)


# ------------------------------------------------------------------ one loop for both


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
