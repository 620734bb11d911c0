"""Training: random crops, nearest-candidate loss, Split-and-Prune after every step,
periodic checkpoints that resume bit-for-bit (``checkpoint``), and a JSONL log beside
the model file, which every checkpoint refreshes (weights + priors + config).

Multi-process (``torchrun --nproc-per-node N -m ddncodec train ...``): gradients are
averaged with all-reduce (gloo on CPU); Split-and-Prune is decided on rank 0 and
broadcast, so every replica applies the same copies and stays identical.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ddncodec import checkpoint
from ddncodec.codec import ladder, rate_aware, table_set
from ddncodec.data import CropSampler, center_crops
from ddncodec.errors import InputError
from ddncodec.metrics import PEAK, decibels
from ddncodec.model import CONFIGS, DDN, Chooser, DDNConfig, nearest
from ddncodec.modelfile import CodecModel, fingerprint, weights_of
from ddncodec.modelfile import load as load_model_file
from ddncodec.options import TrainOptions
from ddncodec.tune import count_priors
from ddncodec.validation import rate_points, validate


def parse_config(text: str) -> DDNConfig:
    if text in CONFIGS:
        return CONFIGS[text]
    path = Path(text)
    try:
        return DDNConfig.from_json(path.read_text() if path.is_file() else text)
    except (TypeError, ValueError) as exc:
        msg = f"--config: {text!r} is neither a known config ({', '.join(CONFIGS)}) nor valid config JSON ({exc})"
        raise InputError(msg) from exc


class StopRequest:
    """SIGTERM or a first Ctrl-C asks the run to stop after the current step and write a
    checkpoint; a second Ctrl-C aborts at once (the last checkpoint stays)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only there can Python take signals
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler or signal.SIG_DFL)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received = signal.Signals(signum).name
        signal.signal(signal.SIGINT, self._previous[signal.SIGINT] or signal.SIG_DFL)


def _join_process_group() -> tuple[int, int]:
    """(world size, this process's rank); under torchrun the gloo group is joined here."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return world, dist.get_rank() if world > 1 else 0


def _device(name: str) -> torch.device:
    """The training device, refused in one line when it is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda: no CUDA device is available"
        raise InputError(msg)
    return torch.device(name)


def _check_resume(files: checkpoint.RunFiles, resume: bool) -> None:
    """--resume needs the run's checkpoint, and a new run never overwrites one."""
    if resume and not files.state.is_file():
        msg = f"--resume: no checkpoint at {files.state}"
        raise InputError(msg)
    if not resume and files.state.exists():
        msg = f"{files.state} exists: pass --resume to continue that run, or remove it to start over"
        raise InputError(msg)


def _pricing_model(path: Path | None, config: DDNConfig) -> CodecModel | None:
    """The --rate-from model whose rungs price the training choice; it must have this run's layers."""
    if path is None:
        return None
    pricing = load_model_file(path)
    if pricing.config.layers != config.layers:
        msg = f"--rate-from: {path} has other layers than this run's config"
        raise InputError(msg)
    return pricing


def _grow(network: DDN, path: Path) -> None:
    """Start from the layers of a smaller model: every tensor of its layers must fit
    the same-named one here (the new config extends the old one by finer layers)."""
    source = load_model_file(path).network
    if len(source.layers) > len(network.layers):
        msg = f"--grow-from: {path} has {len(source.layers)} layers, more than the new config's {len(network.layers)}"
        raise InputError(msg)
    for old, new in zip(source.layers, network.layers, strict=False):
        if old.spec != new.spec:
            msg = f"--grow-from: layer specs differ ({old.spec} vs {new.spec})"
            raise InputError(msg)
        new.load_state_dict(old.state_dict())  # buffers too: Split-and-Prune counters carry on
    with torch.no_grad():
        for new in network.layers[len(source.layers) :]:
            # On the small residual left after the old layers, full-size random heads all lose
            # to "keep" and would never be chosen, so never learn; small ones win about half the cells.
            new.ddl.head.weight.mul_(0.1)


def _starting_network(config: DDNConfig, opts: TrainOptions, device: torch.device, fresh: bool) -> DDN:
    """The network a run starts from, the same on every rank: on a fresh run grown from
    --grow-from, its layers below --train-from frozen."""
    torch.manual_seed(opts.seed)
    network = DDN(config).to(device).train()
    if fresh and opts.grow_from is not None:
        _grow(network, opts.grow_from)
    for layer in network.layers[: opts.train_from]:
        layer.requires_grad_(False)
    return network


class Trainer:
    """One training run, single- or multi-process."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        self.world, self.rank = _join_process_group()
        self.files = checkpoint.RunFiles(opts.out)
        self.device = _device(opts.device)
        _check_resume(self.files, opts.resume)

        self.sampler = CropSampler(opts.data, opts.crop, seed=opts.seed * 1000 + self.rank)
        self.val_crops = center_crops(opts.val, opts.val_crop, opts.val_images) if opts.val and self.rank == 0 else None
        self.step = 0
        self.elapsed = 0.0  # training seconds over all invocations
        state = checkpoint.load(self.files) if opts.resume else None
        config = checkpoint.config(self.files, state) if state is not None else parse_config(opts.config)
        self.splits = [0] * len(config.layers)  # Split-and-Prune events per layer, over all invocations
        self.network = _starting_network(config, opts, self.device, fresh=state is None)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=opts.lr)
        self.pricing = _pricing_model(opts.rate_from, config)
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------ state

    def _restore(self, state: dict) -> None:
        try:
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])  # the rate itself comes from --lr
            self.step = int(state["step"])
            self.elapsed = float(state["elapsed"])
            self.splits = list(state.get("splits", self.splits))
            rng = state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0]
            self.sampler.generator.set_state(rng["sampler"])
            torch.set_rng_state(rng["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            msg = f"{self.files.state}: checkpoint does not fit this run ({exc})"
            raise InputError(msg) from exc

    def _gather(self) -> list[tuple[dict, str]]:
        """Every rank's RNG states and a digest of its weights (rank order)."""
        rng = {"sampler": self.sampler.generator.get_state(), "torch": torch.get_rng_state()}
        mine = (rng, fingerprint(weights_of(self.network)).hex())
        if self.world == 1:
            return [mine]
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, mine)
        return gathered

    def checkpoint(self) -> None:
        """Write the training state (``checkpoint.save``), then refresh the model file."""
        ranks = self._gather()  # every rank takes part
        if self.rank != 0:
            return
        state = {
            "config": self.network.config.to_json(),
            "model": self.network.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "splits": self.splits,
            "rng": [rng for rng, _ in ranks],
        }
        checkpoint.save(self.files, state, self.optimizer.state_dict())
        self.export()
        record = {"event": "checkpoint", "path": str(self.files.state)}
        if self.world > 1:  # replicas must agree; a mismatch here means the all-reduce is broken
            record["replica_weights"] = [digest for _, digest in ranks]
        self.log(record)

    def export(self) -> None:
        """The codec model: current weights + priors counted on fixed training crops.

        Draws nothing from the training RNGs, so a run is the same whatever its checkpoints."""
        saved = self.sampler.generator
        self.sampler.generator = torch.Generator().manual_seed(1234)
        sample = self.sampler.batch(self.opts.prior_crops)
        self.sampler.generator = saved
        network = copy.deepcopy(self.network).cpu().eval()
        table = count_priors(network, sample, nearest)
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
        with self.files.log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------ loop

    def chooser(self, target: torch.Tensor) -> Chooser | None:
        """With --rate-from, every crop is chosen at a random rung of that model's ladder
        (its λ and table set), so heads learn the cells the encoder refines at the rates
        it serves; otherwise the nearest candidate (None)."""
        if self.pricing is None:
            return None
        rungs = ladder(self.pricing)
        picks = torch.randint(len(rungs), (target.shape[0],)).tolist()
        lam = torch.tensor([rungs[r].lam for r in picks])
        sets = torch.tensor([table_set(self.pricing, rungs[r]) for r in picks])
        return rate_aware(target, self.pricing, lam, sets)

    def train_step(self) -> float:
        target = self.sampler.batch(self.opts.batch).to(self.device)
        losses = self.network(target, self.chooser(target))
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:  # not when every cell of every layer kept (a fresh net can): zero gradients
            loss.backward()
        for p in self.network.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            if self.world > 1:
                dist.all_reduce(p.grad)
                p.grad /= self.world
        # A rare crop with a huge error must not throw the whole network off.
        torch.nn.utils.clip_grad_norm_([p for p in self.network.parameters() if p.requires_grad], self.opts.clip)
        lr = self.opts.lr * min(1.0, (self.step + 1) / max(self.opts.warmup, 1))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.split_and_prune()
        self.step += 1
        return float(loss.detach())

    def split_and_prune(self) -> None:
        if self.opts.split_until is not None and self.step >= self.opts.split_until:
            return
        decisions = self.network.split_decisions()
        decisions[: self.opts.train_from] = [None] * min(self.opts.train_from, len(decisions))  # frozen layers stay
        if self.world > 1:
            flat = torch.tensor([d if d is not None else (-1, -1) for d in decisions], dtype=torch.int64)
            dist.broadcast(flat, src=0)
            decisions = [None if a < 0 else (int(a), int(b)) for a, b in flat.tolist()]
        self.network.apply_splits(decisions, self.optimizer)
        self.splits = [n + (d is not None) for n, d in zip(self.splits, decisions, strict=True)]

    def _agree(self, *flags: bool) -> list[bool]:
        """Flags any rank raised, so that every rank stops and checkpoints at the same step."""
        if self.world == 1:
            return list(flags)
        votes = torch.tensor(flags, dtype=torch.int64)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return [bool(v) for v in votes.tolist()]

    def log_progress(self, losses: list[float]) -> None:
        """The mean loss of the last steps, and how evenly every layer's nodes are hit."""
        loss = float(np.mean(losses))
        rates = [round(float(layer.ddl.hit_rates().max()) * layer.ddl.nodes, 2) for layer in self.network.layers]
        self.log(
            {
                "loss": round(loss, 6),
                "psnr_train": round(decibels(max(loss, 1e-10) * PEAK**2), 3),
                "max_hit_x_k": rates,
                "splits": self.splits,
            }
        )

    def validate(self) -> float | None:
        """Validation PSNR after every layer, logged (rank 0 only); the last layer's.
        With --rate-from also the real coder's (bpp, PSNR) at that model's λ > 0 rungs."""
        if self.val_crops is None:
            return None
        layers = validate(self.network, self.val_crops)
        record: dict = {"event": "val", "psnr": layers[-1], "psnr_per_layer": layers}
        if self.pricing is not None:
            record["rate_points"] = rate_points(self.network, self.pricing, self.val_crops)
        self.log(record)
        return layers[-1]

    def run(self) -> None:
        opts = self.opts
        event = "start" if self.step == 0 else "resume"  # a resume may change --lr: log what each phase ran with
        self.log({"event": event, "options": {k: str(v) for k, v in asdict(opts).items()}, "world": self.world})
        start = time.monotonic()
        first_step, last_ckpt = self.step, start
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
        with StopRequest() as stop, bar:
            while opts.steps is None or self.step < opts.steps:
                now = time.monotonic()
                out_of_time = opts.minutes is not None and now - start >= opts.minutes * 60
                due = self.step > first_step and now - last_ckpt >= opts.checkpoint_minutes * 60
                halt, due = self._agree(stop.received is not None or out_of_time, due)
                if halt:
                    break
                if due:
                    self.checkpoint()
                    last_ckpt = time.monotonic()
                t0 = time.monotonic()
                losses.append(self.train_step())
                self.elapsed += time.monotonic() - t0
                bar.update(1)
                if self.step % 50 == 0:
                    self.log_progress(losses)
                    bar.set_postfix(loss=f"{np.mean(losses):.5f}", val_psnr=val)
                    losses.clear()
                if self.step % opts.val_every == 0:
                    val = self.validate() or val
            if stop.received is not None:
                self.log({"event": "stopped", "signal": stop.received})
            self.checkpoint()
            self.validate()
        self.log({"event": "stop", "splits": self.splits})


def train(opts: TrainOptions) -> None:
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    Trainer(opts).run()
    if dist.is_initialized():
        # Rank 0 validates and writes the model after the last step while the others are
        # done: tearing gloo down under a peer still at work sometimes aborted a rank.
        dist.barrier()
        dist.destroy_process_group()
