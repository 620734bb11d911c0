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
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ddncodec import container, detail, reading
from ddncodec.atomic import write_atomically
from ddncodec.context import CONTEXTS
from ddncodec.errors import ModelError
from ddncodec.ladder import QUALITIES, Rung, from_json, validated
from ddncodec.ladder import to_json as ladder_json
from ddncodec.model import DDN, DDNConfig
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.priors import MAX_SETS, Priors

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


def skeleton(config: DDNConfig) -> DDN:
    """The network of ``config`` on the meta device: its parameters' names and shapes, with
    nothing allocated (a config that claims a huge network costs nothing unless its file
    really carries those weights) and no random initialisation the weights would overwrite."""
    with torch.device("meta"):
        return DDN(config)


def build(network: DDN, weights: dict[str, torch.Tensor]) -> DDN:
    """A ``skeleton`` filled with ``weights``, refusing missing, extra or mis-shaped tensors."""
    shapes = {name: tuple(p.shape) for name, p in network.named_parameters()}
    missing = sorted(set(shapes) - set(weights))
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        msg = f"model weights do not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        raise ModelError(msg)
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            msg = f"model tensor {name} has shape {tuple(weights[name].shape)}, config needs {shape}"
            raise ModelError(msg)
    # Module.to_empty would cost a second of imports at start-up; the tensors are swapped in instead.
    for name, param in list(network.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        weight = weights[name].to(param.dtype, copy=True).contiguous()
        setattr(network.get_submodule(owner), leaf, torch.nn.Parameter(weight, requires_grad=param.requires_grad))
    for name, buffer in list(network.named_buffers()):  # Split-and-Prune's counters: training state, zero as built
        owner, _, leaf = name.rpartition(".")
        network.get_submodule(owner).register_buffer(leaf, torch.zeros(buffer.shape, dtype=buffer.dtype))
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
    """Every model file the names resolve to, in lookup order."""
    found = (p for folder in model_dirs() if folder.is_dir() for p in sorted(folder.glob(f"*{SUFFIX}")))
    return [p.resolve() for p in found if p.is_file()]


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


_UNREADABLE = (OSError, SafetensorError, ValueError, RuntimeError, MemoryError)  # a damaged file, a failed mmap
_MAX_REASON = 200  # characters of an exception's text quoted in a ModelError
_MAX_BPP = 1000.0  # a validation rate above this is no rate (raw 8-bit RGB is 24 bpp)
_INTEGERS = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)  # dtypes a prior table may have


def _reason(why: object) -> str:
    """An exception's (or a value's) text on one short line: a hostile file's values must
    not flood the terminal."""
    text = " ".join(str(why).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def load(name_or_path: str | Path = DEFAULT_MODEL) -> CodecModel:
    """The model at a path or of a shipped name (``resolve``). A model file is input too:
    every metadata field is validated, and every tensor's name and shape checked against
    the config before the tensor is read, so a hostile file ends in one ModelError (exit 2),
    never in a traceback, a hang or an allocation its config does not justify."""
    path = resolve(name_or_path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            config, card = _config_and_card(path, meta)
            configs = {key: _filter_config(path, key, meta, config) for key in _FILTERS}
            network = skeleton(config)
            tensors = _read_tensors(f, network, config, configs)
    except _UNREADABLE as exc:
        msg = f"{path}: not a readable model file ({_reason(exc)})"
        raise ModelError(msg) from exc
    priors = _priors(path, config, tensors)
    filters = {key: _load_filter(path, key, configs[key], tensors) for key in _FILTERS}
    stored = meta["ladder"] if "ladder" in meta else card.pop("ladder", None)  # format 1 kept it on the card
    rungs = None
    try:
        if isinstance(stored, str):
            rungs = from_json(stored, len(config.layers))
        elif stored is not None:
            rungs = validated(stored, len(config.layers))
    except ModelError as exc:
        msg = f"{path}: {_reason(exc)}"
        raise ModelError(msg) from exc
    _check_ladder_on_val(path, card)
    return CodecModel(
        build(network, tensors),
        priors,
        card,
        filters["postfilter"],
        rungs,
        filters["detailfilter"],
        origin=path.resolve(),
    )


def _config_and_card(path: Path, meta: dict[str, str]) -> tuple[DDNConfig, dict]:
    """The network config and the card (a JSON object), from metadata of a known format.
    A nesting deep enough to exhaust the JSON parser's recursion is refused like any
    other unreadable text."""
    if meta.get("format") not in (FORMAT, _FORMAT_1):
        msg = f"{path}: not a ddncodec model (format {_reason(repr(meta.get('format')))})"
        raise ModelError(msg)
    try:
        config = DDNConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        msg = f"{path}: model config is unreadable ({_reason(exc)})"
        raise ModelError(msg) from exc
    try:
        card = json.loads(meta.get("card", "{}"))
    except (ValueError, RecursionError) as exc:
        msg = f"{path}: model card is unreadable ({_reason(exc)})"
        raise ModelError(msg) from exc
    if not isinstance(card, dict):
        msg = f"{path}: model card must be a JSON object, not {type(card).__name__}"
        raise ModelError(msg)
    return config, card


def _filter_config(path: Path, key: str, meta: dict[str, str], config: DDNConfig) -> FilterConfig | None:
    """The config of the filter stored under ``key``, if any, checked against the model:
    the post-filter reads the refined cells of the first layers, so its cell sizes must be
    theirs, and runs without a quantiser step; the detail filter reads the detail layer's
    blocks (``detail.BLOCK``) or none."""
    if key not in meta:
        return None
    name = _FILTERS[key]
    try:
        filter_config = FilterConfig.from_json(meta[key])
    except (TypeError, ValueError, RecursionError) as exc:
        msg = f"{path}: {name} is unreadable ({_reason(exc)})"
        raise ModelError(msg) from exc
    cells = filter_config.cells
    if key == "postfilter":
        layer_cells = tuple(spec.cell for spec in config.layers)
        if cells != layer_cells[: len(cells)] or filter_config.step:
            msg = (
                f"{path}: {name} does not fit the model: its cells {list(cells)} must be the first "
                f"layers' cell sizes (of {list(layer_cells)}), and it takes no quantiser step"
            )
            raise ModelError(msg)
    elif cells not in ((), (detail.BLOCK,)):
        msg = f"{path}: {name} does not fit the model: its cells {list(cells)} must be [] or [{detail.BLOCK}]"
        raise ModelError(msg)
    return filter_config


def _read_tensors(
    f: safe_open, network: DDN, config: DDNConfig, configs: dict[str, FilterConfig | None]
) -> dict[str, torch.Tensor]:
    """Every tensor of the file: read if the ``skeleton`` ``network`` or a filter expects its
    name and shape, else a meta-device stand-in of its shape (nothing is read, so an unknown
    4 GB tensor costs nothing) that ``build``, ``_build_filter`` or ``_priors`` then refuses
    by name."""
    expected = {name: tuple(p.shape) for name, p in network.named_parameters()}
    with torch.device("meta"):
        for key, filter_config in configs.items():
            if filter_config is not None:
                net = PostFilter(filter_config)
                expected |= {f"{key}.{name}": tuple(p.shape) for name, p in net.named_parameters()}
    # The most entries each prior table can have (Priors and CodecModel check its shape once read).
    table_sizes = {f"priors.{i}": MAX_SETS * CONTEXTS * spec.k for i, spec in enumerate(config.layers)}
    tensors = {}
    for name in f.keys():  # noqa: SIM118 (safe_open has no iterator)
        shape = tuple(f.get_slice(name).get_shape())
        wanted = expected.get(name) == shape or math.prod(shape) <= table_sizes.get(name, -1)
        tensors[name] = f.get_tensor(name) if wanted else torch.empty(shape, device="meta")
    return tensors


def _priors(path: Path, config: DDNConfig, tensors: dict[str, torch.Tensor]) -> Priors:
    """The prior tables (taken out of ``tensors``): integers, whose shapes and values ``Priors`` checks."""
    tables = []
    for i, spec in enumerate(config.layers):
        table = tensors.pop(f"priors.{i}", None)
        if table is None:
            msg = f"{path}: prior table {i} is missing"
            raise ModelError(msg)
        if table.is_meta:  # not read (``_read_tensors``)
            msg = f"{path}: prior table {i} of shape {tuple(table.shape)} is larger than ({MAX_SETS}, {CONTEXTS}, {spec.k})"
            raise ModelError(msg)
        if table.dtype not in _INTEGERS:
            msg = f"{path}: prior table {i} must be integers, not {table.dtype}"
            raise ModelError(msg)
        tables.append(table.numpy())
    try:
        return Priors(tables)
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise ModelError(msg) from exc


def _finite(value: object) -> bool:
    """A JSON number within float range (an int past it is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= sys.float_info.max


def _check_ladder_on_val(path: Path, card: dict) -> None:
    """The card's validation rates (``tune``), if it has them, which ``--bpp`` starts from:
    one {bpp, psnr} per quality, bpp in (0, _MAX_BPP], psnr finite."""
    if "ladder_on_val" not in card:
        return
    points = card["ladder_on_val"]
    ok = (
        isinstance(points, list)
        and len(points) == len(QUALITIES)
        and all(
            isinstance(p, dict) and _finite(p.get("bpp")) and _finite(p.get("psnr")) and 0 < p["bpp"] <= _MAX_BPP
            for p in points
        )
    )
    if not ok:
        msg = (
            f"{path}: the card's ladder_on_val needs {len(QUALITIES)} entries "
            f"{{bpp: 0 < bpp <= {_MAX_BPP:g}, psnr: a finite number}}, one per quality"
        )
        raise ModelError(msg)


def _load_filter(
    path: Path, key: str, filter_config: FilterConfig | None, tensors: dict[str, torch.Tensor]
) -> PostFilter | None:
    """The filter stored under ``key`` (its tensors are taken out of ``tensors``), or None."""
    prefix = f"{key}."
    weights = {n[len(prefix) :]: tensors.pop(n) for n in list(tensors) if n.startswith(prefix)}
    name = _FILTERS[key]
    if filter_config is None:
        if weights:
            msg = f"{path}: {name} weights without a {name} config"
            raise ModelError(msg)
        return None
    try:
        return _build_filter(filter_config, weights)
    except ModelError as exc:
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
