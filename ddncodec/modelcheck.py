"""Each part of a model file checked against its config before it is built: the network
config and card, the filters' configs, which tensor names and shapes the file may hold,
the prior tables, the ladder and the card's validation rates. Every refusal is one
ModelError naming the file (``ddncodec.modelfile.load`` reads the file and calls these)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ddncodec import detail
from ddncodec.codecmodel import FILTERS, FORMAT
from ddncodec.context import CONTEXTS
from ddncodec.errors import ModelError
from ddncodec.ladder import QUALITIES, Rung, from_json, validated
from ddncodec.model import DDN, DDNConfig
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.priors import MAX_SETS, Priors

FORMAT_1 = "ddncodec-model-1"  # read as well: one prior table per layer, no post-filter
_MAX_REASON = 200  # characters of an exception's text quoted in a ModelError
_MAX_BPP = 1000.0  # a validation rate above this is no rate (raw 8-bit RGB is 24 bpp)
_INTEGERS = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)  # dtypes a prior table may have


def reason(why: object) -> str:
    """An exception's (or a value's) text on one short line: a hostile file's values must
    not flood the terminal."""
    text = " ".join(str(why).split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


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


def config_and_card(path: Path, meta: dict[str, str]) -> tuple[DDNConfig, dict]:
    """The network config and the card (a JSON object), from metadata of a known format.
    A nesting deep enough to exhaust the JSON parser's recursion is refused like any
    other unreadable text."""
    if meta.get("format") not in (FORMAT, FORMAT_1):
        msg = f"{path}: not a ddncodec model (format {reason(repr(meta.get('format')))})"
        raise ModelError(msg)
    try:
        config = DDNConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        msg = f"{path}: model config is unreadable ({reason(exc)})"
        raise ModelError(msg) from exc
    try:
        card = json.loads(meta.get("card", "{}"))
    except (ValueError, RecursionError) as exc:
        msg = f"{path}: model card is unreadable ({reason(exc)})"
        raise ModelError(msg) from exc
    if not isinstance(card, dict):
        msg = f"{path}: model card must be a JSON object, not {type(card).__name__}"
        raise ModelError(msg)
    return config, card


def filter_config(path: Path, key: str, meta: dict[str, str], config: DDNConfig) -> FilterConfig | None:
    """The config of the filter stored under ``key``, if any, checked against the model:
    the post-filter reads the refined cells of the first layers, so its cell sizes must be
    theirs, and runs without a quantiser step; the detail filter reads the detail layer's
    blocks (``detail.BLOCK``) or none."""
    if key not in meta:
        return None
    name = FILTERS[key]
    try:
        stored = FilterConfig.from_json(meta[key])
    except (TypeError, ValueError, RecursionError) as exc:
        msg = f"{path}: {name} is unreadable ({reason(exc)})"
        raise ModelError(msg) from exc
    cells = stored.cells
    if key == "postfilter":
        layer_cells = tuple(spec.cell for spec in config.layers)
        if cells != layer_cells[: len(cells)] or stored.step:
            msg = (
                f"{path}: {name} does not fit the model: its cells {list(cells)} must be the first "
                f"layers' cell sizes (of {list(layer_cells)}), and it takes no quantiser step"
            )
            raise ModelError(msg)
    elif cells not in ((), (detail.BLOCK,)):
        msg = f"{path}: {name} does not fit the model: its cells {list(cells)} must be [] or [{detail.BLOCK}]"
        raise ModelError(msg)
    return stored


@dataclass(frozen=True)
class Expected:
    """The tensors a model's configs call for: a tensor is read only if it is one of them,
    so an unknown 4 GB tensor costs nothing before it is refused by name."""

    shapes: dict[str, tuple[int, ...]]  # network and filter parameters
    table_sizes: dict[str, int]  # the most entries each prior table can have (``Priors`` checks its shape)

    @classmethod
    def of(cls, network: DDN, configs: dict[str, FilterConfig | None]) -> Expected:
        """What the ``skeleton`` ``network`` and the filters of ``configs`` expect."""
        shapes = {name: tuple(p.shape) for name, p in network.named_parameters()}
        with torch.device("meta"):
            for key, config in configs.items():
                if config is not None:
                    net = PostFilter(config)
                    shapes |= {f"{key}.{name}": tuple(p.shape) for name, p in net.named_parameters()}
        tables = {f"priors.{i}": MAX_SETS * CONTEXTS * spec.k for i, spec in enumerate(network.config.layers)}
        return cls(shapes, tables)

    @property
    def names(self) -> list[str]:
        return [*self.shapes, *self.table_sizes]

    def admits(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of this name and shape is worth reading: refused or not, the
        model's builders then name what is wrong with it."""
        return self.shapes.get(name) == shape or math.prod(shape) <= self.table_sizes.get(name, -1)


def priors_of(path: Path, config: DDNConfig, tensors: dict[str, torch.Tensor]) -> Priors:
    """The prior tables (taken out of ``tensors``): integers, whose shapes and values ``Priors`` checks."""
    tables = []
    for i, spec in enumerate(config.layers):
        table = tensors.pop(f"priors.{i}", None)
        if table is None:
            msg = f"{path}: prior table {i} is missing"
            raise ModelError(msg)
        if table.is_meta:  # not read: ``Expected.admits`` refused its size
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


def ladder_of(path: Path, meta: dict[str, str], card: dict, config: DDNConfig) -> tuple[Rung, ...] | None:
    """The stored ladder, if any (format 1 kept it on the card, and leaves the card without it)."""
    stored = meta["ladder"] if "ladder" in meta else card.pop("ladder", None)
    try:
        if isinstance(stored, str):
            return from_json(stored, len(config.layers))
        if stored is not None:
            return validated(stored, len(config.layers))
    except ModelError as exc:
        msg = f"{path}: {reason(exc)}"
        raise ModelError(msg) from exc
    return None


def _finite(value: object) -> bool:
    """A JSON number within float range (an int past it is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= sys.float_info.max


def check_ladder_on_val(path: Path, card: dict) -> None:
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


def filter_of(path: Path, key: str, config: FilterConfig | None, tensors: dict[str, torch.Tensor]) -> PostFilter | None:
    """The filter stored under ``key`` (its tensors are taken out of ``tensors``), or None."""
    prefix = f"{key}."
    weights = {n[len(prefix) :]: tensors.pop(n) for n in list(tensors) if n.startswith(prefix)}
    name = FILTERS[key]
    if config is None:
        if weights:
            msg = f"{path}: {name} weights without a {name} config"
            raise ModelError(msg)
        return None
    try:
        return _build_filter(config, weights)
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
