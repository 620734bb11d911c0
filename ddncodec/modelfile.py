"""Model files: found by name or path, and read without executing any pickled code, each
part checked against the config (``ddncodec.modelcheck``) so that a hostile file ends in
one ModelError. The model itself, its fingerprints and its writing: ``ddncodec.codecmodel``.

A file may store only what differs from a sibling file in its folder (a former default
beside the new one keeps only its own post-filter): it records the sibling's name and the
fingerprint the two make together, and loads only while that sibling is there."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ddncodec import reading
from ddncodec.codecmodel import (
    FILTERS,
    OWN_FINGERPRINT,
    SHARES,
    SIBLING_FINGERPRINT,
    CodecModel,
    fingerprint,
    half_precision,
    weights_of,
)
from ddncodec.errors import ModelError
from ddncodec.model import DDNConfig
from ddncodec.modelcheck import (
    Expected,
    build,
    check_ladder_on_val,
    config_and_card,
    filter_config,
    filter_of,
    ladder_of,
    priors_of,
    reason,
    skeleton,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_DIR",
    "SUFFIX",
    "CodecModel",
    "fingerprint",
    "half_precision",
    "load",
    "model_dirs",
    "named_models",
    "resolve",
    "weights_of",
]

SUFFIX = ".safetensors"
DEFAULT_MODEL = "default"
MODELS_DIR = Path(__file__).resolve().parent / "models"  # package data (in a checkout, a link to the top-level models/)
_UNREADABLE = (OSError, SafetensorError, ValueError, RuntimeError, MemoryError)  # a damaged file, a failed mmap
_MAX_NAME = 255  # characters of a sibling's file name (most file systems' limit)


def resolve(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped model name looked up in $DDNCODEC_MODELS then models/.
    A path that exists must be a regular file: a FIFO would block the read forever."""
    path = Path(name_or_path)
    if path.suffix == SUFFIX or path.exists():
        _require_regular(path)
        return path
    dirs = model_dirs()
    for folder in dirs:
        candidate = folder / f"{name_or_path}{SUFFIX}"
        if candidate.is_file():
            return candidate
    msg = f"model {name_or_path!r} not found (looked in {', '.join(str(d) for d in dirs)})"
    raise ModelError(msg)


def model_dirs() -> list[Path]:
    """Where named models are looked up, in order: $DDNCODEC_MODELS, then the shipped ones."""
    return [Path(d) for d in os.environ.get("DDNCODEC_MODELS", "").split(os.pathsep) if d] + [MODELS_DIR]


def named_models() -> list[Path]:
    """Every model file the names resolve to, in lookup order, but those that share tensors
    with a sibling their folder lacks: they cannot load, and the search for the model that
    made a file (``codec.model_for``) must go on to the others rather than stop there."""
    found = (p for folder in model_dirs() if folder.is_dir() for p in sorted(folder.glob(f"*{SUFFIX}")))
    return [p.resolve() for p in found if p.is_file() and _sibling_present(p)]


def _sibling_present(path: Path) -> bool:
    """False for a file that shares tensors with a sibling its folder lacks (or with one no
    folder may hold); true for any other, even unreadable: ``load`` then says what is wrong."""
    try:
        with safe_open(str(path), "pt") as f:
            sibling = (f.metadata() or {}).get(SHARES)
    except _UNREADABLE:
        return True
    return sibling is None or (_is_bare_name(sibling) and (path.parent / sibling).is_file())


def _require_regular(path: Path) -> None:
    """A ModelError for a model path that is a FIFO, a device, a folder or a symlink loop,
    found by stat before anything opens it; a missing file is left to ``load`` to name."""
    try:
        kind = reading.special(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"{path}: not a readable model file ({exc.strerror})"
        raise ModelError(msg) from exc
    if kind is not None:
        msg = f"{path}: not a readable model file ({kind}, not a regular file)"
        raise ModelError(msg)


def load(name_or_path: str | Path = DEFAULT_MODEL) -> CodecModel:
    """The model at a path or of a shipped name (``resolve``). A model file is input too:
    every metadata field is validated, and every tensor's name and shape checked against
    the config before the tensor is read, so a hostile file ends in one ModelError (exit 2),
    never in a traceback, a hang or an allocation its config does not justify."""
    return _load(resolve(name_or_path), may_share=True)


def _load(path: Path, may_share: bool) -> CodecModel:
    """``load`` of a resolved path; a sibling that others share with (``may_share`` false)
    must be whole, so that no chain or loop of files is followed."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            config, card = config_and_card(path, meta)
            configs = {key: filter_config(path, key, meta, config) for key in FILTERS}
            network = skeleton(config)
            expected = Expected.of(network, configs)
            tensors = {name: _read_tensor(f, name, expected) for name in f.keys()}  # noqa: SIM118 (no iterator)
    except _UNREADABLE as exc:
        msg = f"{path}: not a readable model file ({reason(exc)})"
        raise ModelError(msg) from exc
    sharing = _Sharing.recorded(path, meta, may_share)
    if sharing is not None:
        sibling = sharing.sibling_model(path, config)
        tensors |= _lacking(tensors, expected, sibling)
    priors = priors_of(path, config, tensors)
    filters = {key: filter_of(path, key, configs[key], tensors) for key in FILTERS}
    rungs = ladder_of(path, meta, card, config)
    check_ladder_on_val(path, card)
    model = CodecModel(
        build(network, tensors),
        priors,
        card,
        filters["postfilter"],
        rungs,
        filters["detailfilter"],
        origin=path.resolve(),
    )
    if sharing is not None:
        sharing.check_made(path, model, sibling)
    return model


def _read_tensor(f: safe_open, name: str, expected: Expected) -> torch.Tensor:
    """The tensor if ``expected`` admits its name and shape, else a meta-device stand-in of
    its shape (nothing is read) that the model's builders then refuse by name."""
    shape = tuple(f.get_slice(name).get_shape())
    return f.get_tensor(name) if expected.admits(name, shape) else torch.empty(shape, device="meta")


def _lacking(tensors: dict[str, torch.Tensor], expected: Expected, sibling: CodecModel) -> dict[str, torch.Tensor]:
    """The expected tensors a sharing file lacks, from its sibling: admitted by name and
    shape as the file's own are, so the model's builders check them alike."""
    theirs = sibling.tensors()
    taken = {}
    for name in expected.names:
        if name not in tensors and name in theirs:
            shape = tuple(theirs[name].shape)
            taken[name] = theirs[name] if expected.admits(name, shape) else torch.empty(shape, device="meta")
    return taken


def _is_bare_name(name: str) -> bool:
    """A file name with no folder in it: no separator of any system, no '..', nothing unprintable."""
    return 0 < len(name) <= _MAX_NAME and name.isprintable() and name != "." and not re.search(r"[/\\]|\.\.", name)


@dataclass(frozen=True)
class _Sharing:
    """What a file that stores only part of a model records (``CodecModel.save(shares=...)``)."""

    sibling: Path  # the file holding the rest, in the same folder
    sibling_fingerprint: bytes  # that file's model when this one was written
    fingerprint: bytes  # the model the two make together

    @classmethod
    def recorded(cls, path: Path, meta: dict[str, str], may_share: bool) -> _Sharing | None:
        """The file's sharing record, validated, or None for a whole model file."""
        if SHARES not in meta:
            return None
        name = meta[SHARES]
        if not may_share:
            msg = (
                f"{path}: shares tensors with {reason(repr(name))} in turn; "
                "a model file may share only with a whole one"
            )
            raise ModelError(msg)
        if not _is_bare_name(name):
            msg = f"{path}: the file it shares tensors with must be a file name in its folder, not {reason(repr(name))}"
            raise ModelError(msg)
        return cls(
            path.parent / name,
            _recorded_fingerprint(path, meta, SIBLING_FINGERPRINT),
            _recorded_fingerprint(path, meta, OWN_FINGERPRINT),
        )

    def sibling_model(self, path: Path, config: DDNConfig) -> CodecModel:
        """The whole model of the sibling file, which must have this file's network config."""
        name = self.sibling.name
        if not self.sibling.exists():
            msg = (
                f"{path}: stores only what differs from {name}, which is not in {path.parent}: put the {name} "
                f"it was written with there (model {self.sibling_fingerprint.hex()[:8]})"
            )
            raise ModelError(msg)
        try:
            _require_regular(self.sibling)
            sibling = _load(self.sibling, may_share=False)
        except ModelError as exc:
            msg = f"{path}: the file it shares tensors with does not load: {exc}"
            raise ModelError(msg) from exc
        if sibling.config != config:
            msg = (
                f"{path}: {self.sibling} has another network config; "
                "a model file shares tensors only with one of its own"
            )
            raise ModelError(msg)
        return sibling

    def check_made(self, path: Path, model: CodecModel, sibling: CodecModel) -> None:
        """The model that the file and its sibling made must be the one the file records."""
        if model.fingerprint == self.fingerprint:
            return
        made = (
            f"{path}: with the tensors of {self.sibling} it makes model {model.fingerprint.hex()[:8]}, "
            f"not its own {self.fingerprint.hex()[:8]}"
        )
        if sibling.fingerprint != self.sibling_fingerprint:
            msg = (
                f"{made}: {self.sibling.name} has changed since (model {sibling.fingerprint.hex()[:8]}, not "
                f"{self.sibling_fingerprint.hex()[:8]}); put back the {self.sibling.name} it was written with"
            )
        else:
            msg = f"{made}: the file is damaged"
        raise ModelError(msg)


def _recorded_fingerprint(path: Path, meta: dict[str, str], key: str) -> bytes:
    """A SHA-256 recorded in the metadata as 64 lowercase hex digits."""
    text = meta.get(key)
    if text is None or not re.fullmatch(r"[0-9a-f]{64}", text):
        msg = f"{path}: a file that shares tensors records its {key} as 64 hex digits, not {reason(repr(text))}"
        raise ModelError(msg)
    return bytes.fromhex(text)
