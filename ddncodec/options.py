"""The options of the training commands (train, train-filter, tune) as plain dataclasses.

They import no torch, so that the command line takes its defaults from here (one place)
and ``ddncodec --help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ddncodec.ladder import Rung


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
    clip: float = 1.0  # gradient norm limit
    checkpoint_minutes: float = 10.0
    val_every: int = 250
    val_images: int = 16
    val_crop: int = 256
    prior_crops: int = 48
    grow_from: Path | None = None  # a model whose layers start the first layers of a new run
    train_from: int = 0  # layers below this one stay frozen (with --grow-from: train only the new ones)
    rate_from: Path | None = None  # price the training choice at this model's rungs (λ·bits), as the encoder does
    split_until: int | None = None  # Split-and-Prune stops at this step (None: it runs throughout)
    quiet: bool = False


@dataclass
class FilterTrainOptions:
    model: Path  # the codec model whose decoder output is filtered
    data: list[Path]
    val: list[Path]
    work: Path  # folder for the pool, checkpoint and log
    channels: int = 64
    blocks: int = 6
    pool_crops: int = 512
    pool_crop: int = 256
    batch: int = 16
    window: int = 128
    steps: int = 8000
    lr: float = 1e-3
    val_images: int = 16
    val_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0
    rungs: list[Rung] | None = None  # the rungs the pool is decoded at [default: spread_rungs; detail: the ladder's]
    init: Path | None = None  # a filter checkpoint to start from (fine-tuning)
    side_inputs: bool = True  # the filter also reads where cells were refined and where cell borders lie
    distill: bool = False  # learn the model's own post-filter's output (a cheaper filter for its gain)
    detail: bool = False  # train the detail filter (after the detail layer) instead of the post-filter


@dataclass(frozen=True)
class TuneOptions:
    crops: int = 256  # training crops the table sets are counted on
    crop: int = 128
    val_images: int = 16  # validation photos the ladder is tuned on
    val_size: int = 256
