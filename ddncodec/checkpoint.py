"""Training checkpoints on disk: the files beside a run's model, written so that a kill at
any instant leaves a run that resumes bit for bit, and read without running pickled code.

For ``--out models/name.safetensors``:
  models/name.ckpt.pt    the training state (config, weights, Split-and-Prune counters, RNG, step)
  models/name.adam.pt    Adam's moments and their step (apart, so each file stays small enough to commit)
  models/name.log.jsonl  the run's log (written by the trainer)
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ddncodec.atomic import write_atomically
from ddncodec.errors import InputError
from ddncodec.model import DDNConfig

REQUIRED = ("config", "model", "step", "elapsed", "rng")


@dataclass(frozen=True)
class RunFiles:
    """The files of one run, named after its model file."""

    model: Path

    def _beside(self, suffix: str) -> Path:
        return self.model.with_name(self.model.name.removesuffix(".safetensors") + suffix)

    @property
    def state(self) -> Path:
        return self._beside(".ckpt.pt")

    @property
    def adam(self) -> Path:
        return self._beside(".adam.pt")

    @property
    def log(self) -> Path:
        return self._beside(".log.jsonl")

    @property
    def previous_adam(self) -> Path:
        return self._beside(".adam.prev.pt")


def save(files: RunFiles, state: dict, optimizer: dict) -> None:
    """Write ``state`` and the Adam ``optimizer`` state of the same step, each atomically.

    The order makes a kill at any instant resumable: the previous moments are kept
    beside the new ones until the state that pairs with them is written."""
    if files.adam.exists():
        os.replace(files.adam, files.previous_adam)
    _save({"step": state["step"], "optimizer": optimizer}, files.adam)
    _save({**state, "model": _compact(state["model"])}, files.state)
    files.previous_adam.unlink(missing_ok=True)


def load(files: RunFiles) -> dict:
    """The training state, with the Adam moments of the same step under "optimizer"."""
    state = _load(files.state)
    missing = set(REQUIRED) - set(state)
    if missing:
        msg = f"{files.state}: not a ddncodec checkpoint (no {', '.join(sorted(missing))})"
        raise InputError(msg)
    for path in (files.adam, files.previous_adam):
        if not path.is_file():
            continue
        adam = _load(path)
        if "optimizer" not in adam:  # written before moments carried their step
            return {**state, "optimizer": adam}
        if adam["step"] == state["step"]:
            return {**state, "optimizer": adam["optimizer"]}
    msg = f"{files.adam}: no Adam moments for step {state['step']} of {files.state}"
    raise InputError(msg)


def config(files: RunFiles, state: dict) -> DDNConfig:
    try:
        return DDNConfig.from_json(state["config"])
    except (TypeError, ValueError) as exc:
        msg = f"{files.state}: unreadable model config ({exc})"
        raise InputError(msg) from exc


def _compact(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 tensors that hold float16 values stored as float16: the same numbers in half
    the bytes (layers grown from a float16 model and frozen are; ``load_state_dict`` casts
    them back), so a grown model's checkpoint stays small enough to commit."""
    return {
        name: t.half() if t.dtype == torch.float32 and torch.equal(t.half().float(), t) else t
        for name, t in weights.items()
    }


def _save(obj: object, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash leaves the old file."""
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def _load(path: Path) -> dict:
    """A checkpoint file (tensors and plain data only: nothing pickled is executed)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        msg = f"{path}: not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        raise InputError(msg) from exc
    if not isinstance(state, dict):
        msg = f"{path}: not a ddncodec checkpoint"
        raise InputError(msg)
    return state
