"""The model value: a network with its priors, filters and ladder, its fingerprints, and
its writing to a safetensors file (reading and validating one: ``ddncodec.modelfile``).

A model's fingerprint (hash of everything that decoding depends on: weights, priors,
filters and their configs) goes into every .ddn file, so a stream decoded with another
model is refused. A file that does not run the detail filter carries the fingerprint of
the model without it (``core_fingerprint``): such files decode the same with or without
that filter, so adding one to a model keeps every file made before valid."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ddncodec import container
from ddncodec.atomic import write_atomically
from ddncodec.errors import ModelError
from ddncodec.ladder import Rung, validated
from ddncodec.ladder import to_json as ladder_json
from ddncodec.model import DDN, DDNConfig
from ddncodec.postfilter import PostFilter
from ddncodec.priors import Priors

FORMAT = "ddncodec-model-2"
# Metadata key of each filter's config (its tensors are named "<key>.*") and what errors call it.
FILTERS = {"postfilter": "post-filter", "detailfilter": "detail filter"}
# Metadata of a file that stores only the tensors that differ from a sibling's (``CodecModel.save``):
SHARES = "shares"  # the sibling's file name, in the same folder
SIBLING_FINGERPRINT = "shares_fingerprint"  # the sibling model's fingerprint when the file was written (hex)
OWN_FINGERPRINT = "fingerprint"  # the fingerprint the file and its sibling must make together (hex)


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


def _same(tensor: torch.Tensor, other: torch.Tensor | None) -> bool:
    """Equal dtype, shape and values: a tensor a sharing file need not store."""
    return (
        other is not None and tensor.dtype == other.dtype and tensor.shape == other.shape and torch.equal(tensor, other)
    )


def weights_of(network: DDN) -> dict[str, torch.Tensor]:
    """The inference weights: parameters only (Split-and-Prune counters are training state)."""
    return {name: p.detach().cpu().contiguous() for name, p in network.named_parameters()}


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
    origin: Path | None = field(default=None, compare=False)  # the file it was loaded from, if any

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
        tensors, configs = self.tensors(), self._configs()
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

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by the name a model file stores it under, as the fingerprint hashes it."""
        tensors = _halved(weights_of(self.network))
        for i, table in enumerate(self.priors.tables):
            tensors[f"priors.{i}"] = torch.from_numpy(table.astype(np.int64))
        for key, net in self._filters().items():
            weights = {name: p.detach().cpu().contiguous() for name, p in net.named_parameters()}
            tensors |= {f"{key}.{name}": w for name, w in _halved(weights).items()}
        return tensors

    def _filters(self) -> dict[str, PostFilter]:
        nets = dict(zip(FILTERS, (self.postfilter, self.detailfilter), strict=True))
        return {key: net for key, net in nets.items() if net is not None}

    def _configs(self) -> dict[str, str]:
        return {"config": self.config.to_json()} | {key: net.config.to_json() for key, net in self._filters().items()}

    def save(self, path: Path, shares: CodecModel | None = None) -> None:
        """Write atomically: a crash leaves the previous file intact. With ``shares``, a model
        loaded from a file that will sit beside this one (the default that replaced this
        model, say), store only the tensors that differ from its: ``load`` takes the rest
        from that file and checks that together they make this model again."""
        meta = {"format": FORMAT, **self._configs(), "card": json.dumps(self.card, sort_keys=True)}
        if self.ladder is not None:
            meta["ladder"] = ladder_json(self.ladder)
        tensors = self.tensors()
        if shares is not None:
            if shares.origin is None or shares.config != self.config:
                msg = "a model file shares tensors only with a model loaded from a file, of the same network config"
                raise ValueError(msg)
            meta |= {
                SHARES: shares.origin.name,
                SIBLING_FINGERPRINT: shares.fingerprint.hex(),
                OWN_FINGERPRINT: self.fingerprint.hex(),
            }
            theirs = shares.tensors()
            tensors = {name: t for name, t in tensors.items() if not _same(t, theirs.get(name))}

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp), metadata=meta)
            tmp.chmod(0o644)  # safetensors creates its files private

        write_atomically(path, write)
