"""Training: random crops, nearest-candidate loss, Split-and-Prune after every step,
periodic atomic checkpoints that resume bit-for-bit, and a JSONL log beside the model.

Files written for ``--out models/name.safetensors``:
  models/name.safetensors   the codec model (weights + priors + config), refreshed at every checkpoint
  models/name.ckpt.pt       the training state (weights, Split-and-Prune counters, RNG, step)
  models/name.adam.pt       Adam's moments (apart, so that each file stays small enough to commit)
  models/name.log.jsonl     one JSON object per logged step / validation / checkpoint

Multi-process (``torchrun --nproc-per-node N -m ddncodec train ...``): gradients are
averaged with all-reduce (gloo on CPU); Split-and-Prune is decided on rank 0 and
broadcast, so every replica applies the same copies and stays identical.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ddncodec import priors as priors_mod
from ddncodec.data import CropSampler, center_crops
from ddncodec.errors import InputError
from ddncodec.model import CONFIGS, DDN, DDNConfig
from ddncodec.modelfile import CodecModel


@dataclass
class TrainOptions:
    data: list[Path]
    out: Path
    val: list[Path] = field(default_factory=list)
    config: str = "base"  # a name in CONFIGS, a JSON file, or a JSON string
    minutes: float | None = None  # wall-clock budget of this invocation
    steps: int | None = None  # stop when the run reaches this many steps in total
    resume: bool = False
    seed: int = 0
    device: str = "cpu"
    batch: int = 8
    crop: int = 128
    lr: float = 5e-4
    warmup: int = 200
    checkpoint_minutes: float = 10.0
    val_every: int = 250
    val_images: int = 16
    val_crop: int = 256
    prior_crops: int = 48
    quiet: bool = False


def parse_config(text: str) -> DDNConfig:
    if text in CONFIGS:
        return CONFIGS[text]
    path = Path(text)
    try:
        return DDNConfig.from_json(path.read_text() if path.is_file() else text)
    except (TypeError, ValueError) as exc:
        msg = f"--config: {text!r} is neither a known config ({', '.join(CONFIGS)}) nor valid config JSON ({exc})"
        raise InputError(msg) from exc


def psnr(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) on 8-bit rounded RGB; inputs in [-0.5, 0.5]."""
    a = ((x + 0.5) * 255).round().clamp(0, 255)
    b = ((target + 0.5) * 255).round().clamp(0, 255)
    mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(255**2 / mse)


@torch.no_grad()
def validate(model: DDN, crops: torch.Tensor, batch: int = 8) -> list[float]:
    """Mean PSNR after every layer on the validation crops (nearest choice)."""
    was_training = model.training
    model.eval()
    sums = np.zeros(len(model.config.layers))
    for start in range(0, crops.shape[0], batch):
        target = crops[start : start + batch]
        walk = model.walk((target.shape[0], *target.shape[-2:]), priors_mod.nearest(target))
        for i, (_, x) in enumerate(walk):
            sums[i] += float(psnr(x, target).sum())
    model.train(was_training)
    return [round(v, 3) for v in sums / crops.shape[0]]


def atomic_save(obj: object, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Trainer:
    """One training run, single- or multi-process."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.ckpt_path = opts.out.with_name(opts.out.name.removesuffix(".safetensors") + ".ckpt.pt")
        self.adam_path = opts.out.with_name(opts.out.name.removesuffix(".safetensors") + ".adam.pt")
        self.log_path = opts.out.with_name(opts.out.name.removesuffix(".safetensors") + ".log.jsonl")
        if opts.device == "cuda" and not torch.cuda.is_available():
            msg = "--device cuda: no CUDA device is available"
            raise InputError(msg)
        self.device = torch.device(opts.device)

        self.sampler = CropSampler(opts.data, opts.crop, seed=opts.seed * 1000 + self.rank)
        self.val_crops = center_crops(opts.val, opts.val_crop, opts.val_images) if opts.val and self.rank == 0 else None
        self.step = 0
        self.elapsed = 0.0  # training seconds over all invocations
        if opts.resume and self.ckpt_path.is_file():
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            state["optimizer"] = torch.load(self.adam_path, map_location="cpu", weights_only=True)
            config = DDNConfig.from_json(state["config"])
        elif opts.resume:
            msg = f"--resume: no checkpoint at {self.ckpt_path}"
            raise InputError(msg)
        else:
            state = None
            config = parse_config(opts.config)
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        self.model = DDN(config).to(self.device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr)
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------ state

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # the rate itself comes from --lr
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        rng = state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0]
        self.sampler.generator.set_state(rng["sampler"])
        torch.set_rng_state(rng["torch"])

    def _rng_states(self) -> list[dict]:
        mine = {"sampler": self.sampler.generator.get_state(), "torch": torch.get_rng_state()}
        if self.world == 1:
            return [mine]
        gathered: list[dict] = [{} for _ in range(self.world)]
        dist.all_gather_object(gathered, mine)
        return gathered

    def checkpoint(self) -> None:
        """Write the training state and refresh the model file, both atomically."""
        rng = self._rng_states()  # every rank takes part in the gather
        if self.rank != 0:
            return
        state = {
            "config": self.model.config.to_json(),
            "model": self.model.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "rng": rng,
        }
        # Each write is atomic; a crash between the two pairs newer moments with the
        # previous weights, which still resumes (if not bit-for-bit).
        atomic_save(self.optimizer.state_dict(), self.adam_path)
        atomic_save(state, self.ckpt_path)
        self.export()
        self.log({"event": "checkpoint", "path": str(self.ckpt_path)})

    def export(self) -> None:
        """The codec model: current weights + priors counted on fixed training crops."""
        crops = torch.Generator().manual_seed(1234)
        saved = self.sampler.generator.get_state()
        self.sampler.generator = crops
        sample = self.sampler.batch(self.opts.prior_crops)
        self.sampler.generator = torch.Generator()
        self.sampler.generator.set_state(saved)
        network = DDN(self.model.config)
        network.load_state_dict(self.model.state_dict())
        network.eval()
        table = priors_mod.count(network, sample, priors_mod.nearest)
        card = {
            "data": [str(p) for p in self.opts.data],
            "steps": self.step,
            "train_seconds": round(self.elapsed),
            "batch": self.opts.batch * self.world,
            "crop": self.opts.crop,
            "lr": self.opts.lr,
        }
        CodecModel(network, table, card).save(self.opts.out)

    def log(self, record: dict) -> None:
        if self.rank != 0:
            return
        record = {"step": self.step, "time": round(self.elapsed, 1), **record}
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------ loop

    def train_step(self) -> float:
        target = self.sampler.batch(self.opts.batch).to(self.device)
        losses = self.model(target)
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            if self.world > 1:
                dist.all_reduce(p.grad)
                p.grad /= self.world
        lr = self.opts.lr * min(1.0, (self.step + 1) / max(self.opts.warmup, 1))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.split_and_prune()
        self.step += 1
        return float(loss.detach())

    def split_and_prune(self) -> None:
        decisions = self.model.split_decisions()
        if self.world > 1:
            flat = torch.tensor([d if d is not None else (-1, -1) for d in decisions], dtype=torch.int64)
            dist.broadcast(flat, src=0)
            decisions = [None if a < 0 else (int(a), int(b)) for a, b in flat.tolist()]
        self.model.apply_splits(decisions, self.optimizer)

    def run(self) -> None:
        opts = self.opts
        if self.step == 0:
            self.log({"event": "start", "options": {k: str(v) for k, v in asdict(opts).items()}, "world": self.world})
        else:
            self.log({"event": "resume"})
        start = time.monotonic()
        last_ckpt = start
        bar = tqdm(
            total=opts.steps,
            initial=self.step,
            disable=opts.quiet or self.rank != 0,
            mininterval=1.0 if os.isatty(2) else 30.0,
            unit="step",
            dynamic_ncols=True,
        )
        val = None
        losses: list[float] = []
        try:
            while True:
                if opts.steps is not None and self.step >= opts.steps:
                    break
                if opts.minutes is not None and time.monotonic() - start >= opts.minutes * 60:
                    break
                t0 = time.monotonic()
                losses.append(self.train_step())
                self.elapsed += time.monotonic() - t0
                bar.update(1)
                if self.step % 50 == 0:
                    loss = float(np.mean(losses))
                    losses.clear()
                    rates = [
                        round(float(layer.ddl.hit_rates().max()) * (layer.ddl.nodes), 2) for layer in self.model.layers
                    ]
                    self.log(
                        {
                            "loss": round(loss, 6),
                            "psnr_train": round(-10 * math.log10(max(loss, 1e-10)), 3),
                            "max_hit_x_k": rates,
                        }
                    )
                    bar.set_postfix(loss=f"{loss:.5f}", val_psnr=val)
                if self.val_crops is not None and self.step % opts.val_every == 0:
                    layers = validate(self.model, self.val_crops)
                    val = layers[-1]
                    self.log({"event": "val", "psnr": val, "psnr_per_layer": layers})
                    bar.set_postfix(loss=f"{np.mean(losses) if losses else 0:.5f}", val_psnr=val)
                if time.monotonic() - last_ckpt >= opts.checkpoint_minutes * 60:
                    self.checkpoint()
                    last_ckpt = time.monotonic()
        except KeyboardInterrupt:
            self.log({"event": "interrupted"})
        finally:
            bar.close()
        self.checkpoint()
        if self.val_crops is not None:
            layers = validate(self.model, self.val_crops)
            self.log({"event": "val", "psnr": layers[-1], "psnr_per_layer": layers})
        self.log({"event": "stop"})


def train(opts: TrainOptions) -> None:
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    Trainer(opts).run()
