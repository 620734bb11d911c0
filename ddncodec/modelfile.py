"""Model files: weights, priors and config in one safetensors file, loaded without
executing any pickled code. A model's fingerprint (hash of weights and priors) goes
into every .ddn file, so a stream decoded with another model is refused."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ddncodec.atomic import write_atomically
from ddncodec.errors import ModelError
from ddncodec.model import DDN, DDNConfig, build, fingerprint, weights_of
from ddncodec.priors import Priors

FORMAT = "ddncodec-model-1"
SUFFIX = ".safetensors"
DEFAULT_MODEL = "default"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass
class CodecModel:
    """A network with its entropy model, ready to encode and decode."""

    network: DDN
    priors: Priors
    card: dict = field(default_factory=dict)  # free-form facts: data, steps, wall time
    fingerprint: bytes = b""

    def __post_init__(self) -> None:
        self.network.eval()
        if len(self.priors.tables) != len(self.network.config.layers) or any(
            t.size != s.k for t, s in zip(self.priors.tables, self.network.config.layers, strict=True)
        ):
            msg = "model priors do not match its layers"
            raise ModelError(msg)
        self.fingerprint = fingerprint(self._tensors())

    @property
    def config(self) -> DDNConfig:
        return self.network.config

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = weights_of(self.network)
        for i, table in enumerate(self.priors.tables):
            tensors[f"priors.{i}"] = torch.from_numpy(table.astype(np.int64))
        return tensors

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the previous file intact."""
        meta = {"format": FORMAT, "config": self.config.to_json(), "card": json.dumps(self.card, sort_keys=True)}
        tensors = self._tensors()

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp), metadata=meta)
            tmp.chmod(0o644)  # safetensors creates its files private

        write_atomically(path, write)


def resolve(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped model name looked up in $DDNCODEC_MODELS then models/."""
    path = Path(name_or_path)
    if path.suffix == SUFFIX or path.exists():
        return path
    dirs = [Path(d) for d in os.environ.get("DDNCODEC_MODELS", "").split(os.pathsep) if d] + [MODELS_DIR]
    for folder in dirs:
        candidate = folder / f"{name_or_path}{SUFFIX}"
        if candidate.is_file():
            return candidate
    msg = f"model {name_or_path!r} not found (looked in {', '.join(str(d) for d in dirs)})"
    raise ModelError(msg)


def load(name_or_path: str | Path = DEFAULT_MODEL) -> CodecModel:
    path = resolve(name_or_path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError, ValueError) as exc:
        msg = f"{path}: not a readable model file ({exc})"
        raise ModelError(msg) from exc
    if meta.get("format") != FORMAT:
        msg = f"{path}: not a ddncodec model (format {meta.get('format')!r})"
        raise ModelError(msg)
    try:
        config = DDNConfig.from_json(meta["config"])
        card = json.loads(meta.get("card", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{path}: model config is unreadable ({exc})"
        raise ModelError(msg) from exc
    tables = []
    for i in range(len(config.layers)):
        table = tensors.pop(f"priors.{i}", None)
        if table is None:
            msg = f"{path}: prior table {i} is missing"
            raise ModelError(msg)
        tables.append(table.numpy())
    try:
        priors = Priors(tables)
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise ModelError(msg) from exc
    return CodecModel(build(config, tensors), priors, card)
