"""Model files: weights, priors, filters and config in one safetensors file, loaded
without executing any pickled code. A model's fingerprint (hash of everything that
decoding depends on: weights, priors, filters and their configs) goes into every .ddn
file, so a stream decoded with another model is refused. A file that does not run the
detail filter carries the fingerprint of the model without it (``core_fingerprint``):
such files decode the same with or without that filter, so adding one to a model
keeps every file made before valid."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ddncodec import container
from ddncodec.atomic import write_atomically
from ddncodec.errors import ModelError
from ddncodec.ladder import Rung, from_json, validated
from ddncodec.ladder import to_json as ladder_json
from ddncodec.model import DDN, DDNConfig
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.priors import Priors

FORMAT = "ddncodec-model-2"
_FORMAT_1 = "ddncodec-model-1"  # read as well: one prior table per layer, no post-filter
# Metadata key of each filter's config (its tensors are named "<key>.*") and what errors call it.
_FILTERS = {"postfilter": "post-filter", "detailfilter": "detail filter"}
SUFFIX = ".safetensors"
DEFAULT_MODEL = "default"
MODELS_DIR = Path(__file__).resolve().parent / "models"  # package data (in a checkout, a link to the top-level models/)


def fingerprint(tensors: dict[str, torch.Tensor], configs: dict[str, str] | None = None) -> bytes:
    """SHA-256 over every config text and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, text in sorted((configs or {}).items()):
        digest.update(f"{name}|{text}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return digest.digest()


def half_precision(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every parameter rounded to the nearest float16 value (kept float32).
    A model file stores such a network or post-filter as float16 (half the bytes); loading
    casts back, so it computes in float32 either way and the fingerprint survives the
    round trip."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


def _halved(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` as float16 if every one is a float16 value (``half_precision`` rounded
    them): the same numbers in half the bytes. Else unchanged."""
    if all(torch.equal(w.half().float(), w) for w in weights.values()):
        return {name: w.half() for name, w in weights.items()}
    return weights


def weights_of(network: DDN) -> dict[str, torch.Tensor]:
    """The inference weights: parameters only (Split-and-Prune counters are training state)."""
    return {name: p.detach().cpu().contiguous() for name, p in network.named_parameters()}


def build(config: DDNConfig, weights: dict[str, torch.Tensor]) -> DDN:
    """Rebuild a network from its config and weights, refusing missing, extra or mis-shaped
    tensors. The shapes are checked on a meta-device network first, so a config that claims
    a huge network allocates nothing unless its file really carries those weights."""
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in DDN(config).named_parameters()}
    missing = sorted(set(shapes) - set(weights))
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        msg = f"model weights do not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        raise ModelError(msg)
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            msg = f"model tensor {name} has shape {tuple(weights[name].shape)}, config needs {shape}"
            raise ModelError(msg)
    network = DDN(config)
    with torch.no_grad():
        for name, param in network.named_parameters():
            param.copy_(weights[name].to(param.dtype))
    return network.eval()


@dataclass
class CodecModel:
    """A network with its entropy model, ready to encode and decode."""

    network: DDN
    priors: Priors
    card: dict = field(default_factory=dict)  # free-form facts: data, steps, wall time
    postfilter: PostFilter | None = None  # runs on every decoded tile
    ladder: tuple[Rung, ...] | None = None  # what each --quality means (None: ladder.fallback)
    detailfilter: PostFilter | None = None  # runs after the detail layer, where the encoder chose it
    fingerprint: bytes = b""
    core_fingerprint: bytes = b""  # the fingerprint without the detail filter

    def __post_init__(self) -> None:
        self.network.eval()
        for net in (self.postfilter, self.detailfilter):
            if net is not None:
                net.eval()
        if len(self.priors.tables) != len(self.network.config.layers) or any(
            t.shape[-1] != s.k for t, s in zip(self.priors.tables, self.network.config.layers, strict=True)
        ):
            msg = "model priors do not match its layers"
            raise ModelError(msg)
        if self.ladder is not None:
            self.ladder = validated(self.ladder, len(self.config.layers))
        tensors, configs = self._tensors(), self._configs()
        self.fingerprint = fingerprint(tensors, configs)
        # What the same model without its detail filter would hash to: the rest of the same tensors.
        self.core_fingerprint = self.fingerprint
        if self.detailfilter is not None:
            core = {name: t for name, t in tensors.items() if not name.startswith("detailfilter.")}
            self.core_fingerprint = fingerprint(core, {k: v for k, v in configs.items() if k != "detailfilter"})

    def file_fingerprint(self, detail_filtered: bool) -> bytes:
        """The fingerprint prefix a .ddn file carries: the whole model's if its decode runs
        the detail filter, else the core's."""
        whole = self.fingerprint if detail_filtered else self.core_fingerprint
        return whole[: container.FINGERPRINT_BYTES]

    def replace(self, **changes: object) -> CodecModel:
        """A copy with some fields changed (the fingerprint is recomputed)."""
        return dataclasses.replace(self, **changes)

    @property
    def config(self) -> DDNConfig:
        return self.network.config

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = _halved(weights_of(self.network))
        for i, table in enumerate(self.priors.tables):
            tensors[f"priors.{i}"] = torch.from_numpy(table.astype(np.int64))
        for key, net in self._filters().items():
            weights = {name: p.detach().cpu().contiguous() for name, p in net.named_parameters()}
            tensors |= {f"{key}.{name}": w for name, w in _halved(weights).items()}
        return tensors

    def _filters(self) -> dict[str, PostFilter]:
        nets = dict(zip(_FILTERS, (self.postfilter, self.detailfilter), strict=True))
        return {key: net for key, net in nets.items() if net is not None}

    def _configs(self) -> dict[str, str]:
        return {"config": self.config.to_json()} | {key: net.config.to_json() for key, net in self._filters().items()}

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the previous file intact."""
        meta = {"format": FORMAT, **self._configs(), "card": json.dumps(self.card, sort_keys=True)}
        if self.ladder is not None:
            meta["ladder"] = ladder_json(self.ladder)
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
    if meta.get("format") not in (FORMAT, _FORMAT_1):
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
    filters = {key: _load_filter(path, key, meta, tensors) for key in _FILTERS}
    stored = meta["ladder"] if "ladder" in meta else card.pop("ladder", None)  # format 1 kept it on the card
    rungs = None
    try:
        if isinstance(stored, str):
            rungs = from_json(stored, len(config.layers))
        elif stored is not None:
            rungs = validated(stored, len(config.layers))
    except ModelError as exc:
        msg = f"{path}: {exc}"
        raise ModelError(msg) from exc
    return CodecModel(build(config, tensors), priors, card, filters["postfilter"], rungs, filters["detailfilter"])


def _load_filter(path: Path, key: str, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> PostFilter | None:
    """The filter stored under ``key`` (its tensors are taken out of ``tensors``), or None."""
    prefix = f"{key}."
    weights = {n[len(prefix) :]: tensors.pop(n) for n in list(tensors) if n.startswith(prefix)}
    name = _FILTERS[key]
    if key not in meta:
        if weights:
            msg = f"{path}: {name} weights without a {name} config"
            raise ModelError(msg)
        return None
    try:
        return _build_filter(FilterConfig.from_json(meta[key]), weights)
    except (TypeError, ValueError, ModelError) as exc:
        msg = f"{path}: {name} is unreadable ({exc})"
        raise ModelError(msg) from exc


def _build_filter(config: FilterConfig, weights: dict[str, torch.Tensor]) -> PostFilter:
    net = PostFilter(config)
    expected = {name: tuple(p.shape) for name, p in net.named_parameters()}
    if {n: tuple(t.shape) for n, t in weights.items()} != expected:
        msg = "post-filter weights do not match its config"
        raise ModelError(msg)
    net.load_state_dict(weights)
    return net.eval()
