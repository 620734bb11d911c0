"""The codec's data path: image -> tiles -> DDN index maps -> layer streams -> .ddn, and back.

Encoding walks the generator over each tile and, per layer and cell, keeps the
candidate with the lowest cost SSE + λ·bits (λ = 0: the plain nearest candidate;
bits = −log2 p under the static odds of the rung's table set, so cells that are
already good take the cheap "keep" symbol); the index maps are then coded with the
adaptive context model. Decoding replays the stored indices through the same
generator: it never takes an argmin, so float drift cannot desynchronise it. The
model's post-filter, if it has one, runs on each decoded tile on both sides.

Large images are cut into independent tiles of at most TILE px (a format constant,
see docs/FORMAT.md) and coded one tile at a time, so memory stays bounded;
each layer's stream holds that layer's symbols of every tile (layer-major), so a
prefix of the file still decodes to the coarser image.
"""

from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddncodec import container, detail, entropy, imageio
from ddncodec.context import code_lengths, parent_grid, parent_positions, static_lengths
from ddncodec.data import to_tensor
from ddncodec.errors import FormatError, OptionError
from ddncodec.ladder import MAX_DETAIL_STEP, QUALITIES, Rung
from ddncodec.ladder import fallback as fallback_ladder
from ddncodec.model import Candidates, Chooser, DDNConfig
from ddncodec.modelfile import CodecModel, load, named_models, resolve
from ddncodec.postfilter import from_uint8, refined_flags, to_uint8

TILE = 1024  # px: the largest tile side; part of the format
DEFAULT_QUALITY = 5
EFFORTS = (1, 2)  # 1: each layer priced, then settled; 2: with a one-layer lookahead (about 2.3x the encode time)
LOOKAHEAD_LAMBDA = 1.4
"""Effort 2 prices bits this much higher: the lookahead counts what a refinement is
worth to the next layer too, so at the same λ it refines more; 1.4x keeps each rung's
rate within about 7 % of the unsettled effort 1 (26-layer model, 8 validation crops, λ from 0
to 3000); settled effort 1 codes about 10 % fewer bits at each rung."""
BPP_TOLERANCE = 0.04  # the --bpp search stops this close to the target (relative)
SEARCH_WALKS = 8  # the --bpp search keeps the closest file after this many walks
LAMBDA_FLOOR = 10.0  # the search steps in log(λ + LAMBDA_FLOOR): λ under ~10 is as good as 0
RATE_SLOPE = 0.5  # the search's first guess of -d log bpp / d log(λ + LAMBDA_FLOOR)
STEP_LIMIT = 4.0  # the search's largest step outside a bracket, in log(λ + LAMBDA_FLOOR)
BRACKET_WIDTH = 0.02  # a bracket this narrow in log(λ + LAMBDA_FLOOR) ends the search
LAMBDA_MIN, LAMBDA_MAX = 1.0, 1e7  # below: as good as 0; above: every cell takes its cheapest symbol

ModelSpec = CodecModel | str | os.PathLike
T = TypeVar("T")
R = TypeVar("R")


# ---------------------------------------------------------------- models


_loaded: dict[tuple[Path, int, int], CodecModel] = {}
MODELS_KEPT = 2


def load_model(spec: ModelSpec = "default") -> CodecModel:
    """A model object as is, or a name/path loaded once per file version (path, mtime, size)."""
    if isinstance(spec, CodecModel):
        return spec
    path = resolve(spec).resolve()
    try:
        stat = path.stat()
    except OSError:
        return load(path)  # raises the ModelError that names the missing file
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        if len(_loaded) >= MODELS_KEPT:  # a new default beside the one before it is the common case
            del _loaded[next(iter(_loaded))]
        with _torch_threads(1):  # hundreds of small tensor ops: on a busy machine, threads only wait on each other
            _loaded[key] = load(path)
    return _loaded[key]


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch on ``count`` threads, then the caller's setting again."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_for(header: container.Header, spec: ModelSpec) -> CodecModel:
    """The model a file needs: ``spec`` if the file carries its fingerprint; else, if
    ``spec`` is a named model (the default, say), the named model that made the file, so
    the files of an earlier default still decode after a new one ships."""
    model = load_model(spec)
    if header.fingerprint == model.file_fingerprint(header.detail_filtered):
        return model
    named = named_models()
    if model.origin in named:
        for path in named:
            other = load_model(path)
            if header.fingerprint == other.file_fingerprint(header.detail_filtered):
                return other
    expected = model.file_fingerprint(header.detail_filtered)
    msg = (
        f"this .ddn file was made with another model (fingerprint {header.fingerprint.hex()}); "
        f"the model in use is {expected.hex()}; decode it with the model that made it"
    )
    raise FormatError(msg)


# ---------------------------------------------------------------- rate control


def ladder(model: CodecModel) -> tuple[Rung, ...]:
    """The model's own ladder (tuned on validation data) or the fallback."""
    return model.ladder or fallback_ladder(len(model.config.layers))


def table_set(model: CodecModel, rung: Rung) -> int:
    """The entropy table set for ``rung``: the set of the first ladder rung that walks the
    same layers at the same λ, else of the rung nearest in log(1 + λ), then in layers.
    The detail step changes no index, so it never picks a set: ``tune`` counts rungs that
    differ only there alike, and a ladder whose detail rungs walk another rung's path (q1's,
    say) codes that walk with that rung's tables."""
    rungs = ladder(model)[: model.priors.sets]
    if len(rungs) < model.priors.sets or model.priors.sets == 1:
        return 0
    return min(
        range(len(rungs)),
        key=lambda i: (abs(math.log1p(rungs[i].lam) - math.log1p(rung.lam)), abs(rungs[i].layers - rung.layers)),
    )


def rate_aware(
    target: torch.Tensor,
    model: CodecModel,
    lam: float | torch.Tensor,
    tables: int | torch.Tensor = 0,
    lookahead: int = 0,
) -> Chooser:
    """Per cell, argmin over candidates of SSE (8-bit levels²) + λ·bits, bits the code
    length under table set ``tables`` given whether the co-located cell of the layer
    before kept (the context model's part that is known before a layer is chosen); then
    (without ``lookahead``) ``settle`` revisits each cell's keep-or-refine with its
    neighbours' choices known.

    ``lam`` and ``tables`` are one value for the batch or one per image ((B,) tensors:
    training prices every crop at its own rung). With ``lookahead`` (the number of
    layers the walk codes; effort 2), every layer but the last of them weighs each cell's
    two cheapest candidates by that cost plus the cheapest the next layer then reaches:
    a refinement also helps the layer after it, which the one-layer price leaves out."""
    specs, b = model.config.layers, target.shape[0]
    weight = torch.as_tensor(lam, dtype=torch.float32, device=target.device).expand(b).reshape(b, 1, 1, 1)
    used, which = torch.as_tensor(tables, dtype=torch.long).expand(b).unique(return_inverse=True)
    bits = []  # per layer, (B, 2, K): each image's code lengths by parent-kept
    lengths = []  # per layer, (B, CONTEXTS, 4, 4, K): each image's static_lengths, for settle
    for i in range(len(specs) if bool(weight.any()) else 0):
        by_set = np.stack([model.priors.bits_by_parent(i, int(t)) for t in used])  # only the sets in use
        bits.append(torch.from_numpy(by_set).float()[which].to(target.device))
        if not lookahead:
            lengths.append(np.stack([static_lengths(model.priors.initial(i, int(t))) for t in used])[which.numpy()])
    chosen: dict[int, torch.Tensor] = {}  # this walk's choices so far, by layer
    images = torch.arange(b, device=target.device)[:, None, None]

    def priced(layer: int, options: Candidates, above: torch.Tensor | None) -> torch.Tensor:
        """(B, K, rows, cols) costs of ``layer``'s candidates, ``above`` the choices of the layer before."""
        cost = options.cost(target)
        if not bits:
            return cost
        kept = parent_kept(layer, cost.shape[2:], above)
        return cost * 255.0**2 + weight * bits[layer][images, kept].permute(0, 3, 1, 2)

    def parent_kept(layer: int, shape: tuple[int, int], above: torch.Tensor | None = None) -> torch.Tensor:
        """(B, rows, cols) 0/1: whether each cell's co-located cell of the layer before kept."""
        above = chosen.get(layer - 1) if above is None else above
        if above is None:
            return torch.zeros(b, *shape, dtype=torch.long, device=target.device)
        cell, previous_cell = specs[layer].cell, specs[layer - 1].cell
        r = torch.from_numpy(parent_positions(shape[0], cell, previous_cell, above.shape[1]))
        c = torch.from_numpy(parent_positions(shape[1], cell, previous_cell, above.shape[2]))
        return (above[:, r][:, :, c] == 0).long()

    def looked_ahead(layer: int, options: Candidates, cost: torch.Tensor) -> torch.Tensor:
        """Per cell, the better of its two cheapest candidates counting the next layer's
        cheapest cost after each (every cell of the image taking its first, then its second)."""
        group = specs[layer].cell // specs[layer + 1].cell
        best = cost.topk(2, dim=1, largest=False)
        nxt = model.network.layers[layer + 1]
        totals = []
        for k in range(2):
            idx = best.indices[:, k]
            image = options.compose(idx)
            after = priced(layer + 1, nxt.candidates(nxt.features(options.trunk, image), image), idx).amin(1)
            totals.append(best.values[:, k] + F.avg_pool2d(after[:, None], group)[:, 0] * group**2)
        return torch.where(totals[1] < totals[0], best.indices[:, 1], best.indices[:, 0])

    def settled(layer: int, cost: torch.Tensor) -> torch.Tensor:
        """``settle`` on the per-cell choice of ``cost`` (B, K, rows, cols), priced as ``priced`` does."""
        kept = parent_kept(layer, cost.shape[2:])
        refine = cost[:, 1:].argmin(1, keepdim=True) + 1
        options = torch.cat([torch.zeros_like(refine), refine], 1)  # keep, and the best refinement
        sse = cost.gather(1, options) - weight * bits[layer][images, kept].permute(0, 3, 1, 2).gather(1, options)
        idx = settle(
            cost.argmin(1).cpu().numpy(),
            refine[:, 0].cpu().numpy(),
            (sse[:, 1] - sse[:, 0]).detach().double().cpu().numpy(),
            kept.cpu().numpy(),
            lengths[layer],
            weight.reshape(b).double().cpu().numpy(),
        )
        return torch.from_numpy(idx).to(cost.device)

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        cost = priced(layer, options, chosen.get(layer - 1))
        ahead = layer + 1 < lookahead and specs[layer].cell % specs[layer + 1].cell == 0
        if ahead:
            idx = looked_ahead(layer, options, cost)
        elif bits and not lookahead:  # effort 2 measured better without it (-0.06 to -0.00 dB with it)
            idx = settled(layer, cost)
        else:
            idx = cost.argmin(1)
        chosen[layer] = idx
        return idx

    return choose


SETTLE_ROWS, SETTLE_COLUMNS = 2, 3
"""``settle`` visits the cells in these interleaved classes: a cell's code length depends
on the cell itself and its neighbours up-left, up, up-right, left and right, so no cell's
depends on two cells of one class, and a class can be priced all at once."""

_REGION = ((0, 1), (0, 0), (0, 2), (1, 0), (1, 1), (1, 2))
"""In ``settle``'s padded code lengths (one column each side), a cell and the cells whose
context it is part of: left, right, and the three below."""


def settle(
    draft: np.ndarray,
    refine: np.ndarray,
    extra_sse: np.ndarray,
    parent_kept: np.ndarray,
    lengths: np.ndarray,
    lam: np.ndarray,
) -> np.ndarray:
    """One layer's choices (B, H, W) after one sweep of iterated conditional modes over
    the per-cell ``draft``: each cell, class by class, takes "keep" (0) or its best
    refinement ``refine`` (costing ``extra_sse`` more squared error than keeping) by
    SSE + λ·bits, the bits those of the cell and of every neighbour whose context it is
    part of, under ``context.code_lengths``. The draft prices a cell without its
    neighbours; flat areas keep in runs, so a keep beside keeps is cheaper than that, and
    refining among them dearer. ``lam`` (B,) per image; ``lengths`` as code_lengths takes."""
    grid = draft.copy()
    _, height, width = grid.shape
    weight = lam[:, None, None]
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for r0 in range(SETTLE_ROWS):
        for c0 in range(SETTLE_COLUMNS):
            members = np.broadcast_to((rows % SETTLE_ROWS == r0) & (cols % SETTLE_COLUMNS == c0), grid.shape)
            totals = []
            for option in (0, refine):
                trial = np.where(members, option, grid)
                own = np.pad(code_lengths(trial, parent_kept, lengths), ((0, 0), (0, 1), (1, 1)))
                region = sum(own[:, dr : dr + height, dc : dc + width] for dr, dc in _REGION)
                totals.append(weight * region)
            totals[1] += extra_sse
            grid = np.where(members, np.where(totals[1] < totals[0], refine, 0), grid)
    return grid


# ---------------------------------------------------------------- tiles


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int
    unit: int

    @property
    def padded(self) -> tuple[int, int]:
        return -(-self.height // self.unit) * self.unit, -(-self.width // self.unit) * self.unit


def _spans(length: int, unit: int) -> list[tuple[int, int]]:
    """Cut ``length`` px into near-equal spans of at most TILE px, each a multiple of
    ``unit`` but the last."""
    parts = -(-length // TILE)
    step = unit * -(-length // (parts * unit))
    return [(start, min(step, length - start)) for start in range(0, length, step)]


def plan(width: int, height: int, unit: int) -> list[Tile]:
    """The tiles of an image, in raster order (the order of their symbols in every stream)."""
    return [Tile(t, left, h, w, unit) for t, h in _spans(height, unit) for left, w in _spans(width, unit)]


def cells(tile: Tile, model: CodecModel, layer: int) -> tuple[int, int]:
    """The (rows, columns) of ``layer``'s cell grid over ``tile``."""
    cell = model.config.layers[layer].cell
    ph, pw = tile.padded
    return ph // cell, pw // cell


class _Workers(threading.local):
    """The running encode or decode's workers, per calling thread (None: one at a time)."""

    active = False
    pool: ThreadPoolExecutor | None = None
    progress: Progress | None = None
    done = 0
    total: int | None = None


Progress = Callable[[int, int | None], None]
"""Called with the tiles and strips done so far and the count expected (None: unknown,
as in a ``--bpp`` search) as each one finishes."""

_workers = _Workers()


@contextmanager
def workers(threads: int | None = None, progress: Progress | None = None) -> Iterator[None]:
    """Run the codec's tiles and strips on ``threads`` workers (None: every core), each
    with torch on one thread, reporting each one done to ``progress``; then restore the
    caller's torch setting. Nested calls run on the outer call's workers.

    oneDNN picks convolution kernels, and with them the order of float sums, by thread
    count and batch size; a last-bit difference can flip a pixel's 8-bit rounding. One
    thread per op and one tile at a time make the bytes and pixels the same whatever the
    worker count and the caller's thread count, and the decode equal to the encoder's
    reconstruction."""
    if _workers.active:
        yield
        return
    count = (os.cpu_count() or 1) if threads is None else threads
    if count < 1:
        msg = f"threads must be at least 1, got {count}"
        raise OptionError(msg)
    _workers.active, _workers.progress, _workers.done, _workers.total = True, progress, 0, None
    _workers.pool = ThreadPoolExecutor(count, thread_name_prefix="ddncodec") if count > 1 else None
    try:
        with _torch_threads(1), torch.inference_mode():
            yield
    finally:
        pool, _workers.pool, _workers.active, _workers.progress = _workers.pool, None, False, None
        if pool is not None:
            pool.shutdown()


def _map(work: Callable[[T], R], items: Sequence[T], counted: bool = True) -> list[R]:
    """``work`` over ``items``, results in order, on the running workers if there are
    several; each item one step of ``progress`` if ``counted``."""

    def run(item: T) -> R:
        with torch.inference_mode():  # a thread-local mode: each worker enters it
            return work(item)

    pool, progress = _workers.pool, _workers.progress
    results = []
    for result in (map if pool is None or len(items) < 2 else pool.map)(run, items):
        results.append(result)
        if counted:
            _workers.done += 1
            if progress is not None:
                progress(_workers.done, _workers.total)
    return results


Maps = list[list[np.ndarray]]
"""Index maps of a walk: per layer, per tile, the (rows, columns) grid of chosen symbols."""


@dataclass
class _Walked:
    """The generator walked over every tile: the 8-bit image, the index maps,
    and per tile what the model's post-filter reads (the padded tile and its
    ``refined_flags``; none if the walk was not kept for the filter)."""

    image: np.ndarray  # (H, W, 3) uint8: the walk's image, once ``_decoded`` chose, the one the decoder makes
    maps: Maps
    tiles: list[tuple[Tile, torch.Tensor, torch.Tensor]]
    filtered: bool = False  # whether ``image`` is the post-filtered one (``_decoded``'s choice)


class Filtering(enum.Enum):
    """What a walk does about the model's post-filter."""

    NONE = 0  # the plain image only
    LATER = 1  # keep each tile's pixels and flags for ``_filtered`` (the encoder decides by PSNR)
    NOW = 2  # filter each tile as it is walked, into the image (the decoder: no tile kept)


def _walk(
    model: CodecModel, tiles: list[Tile], layers: int, chooser_for: Callable[[int], Chooser], filtering: Filtering
) -> _Walked:
    """Walk the generator over each tile with the chooser ``chooser_for(tile index)``,
    on the workers, doing ``filtering``."""
    height = max(t.top + t.height for t in tiles)
    width = max(t.left + t.width for t in tiles)
    canvas = np.empty((height, width, 3), dtype=np.uint8)

    def walk_tile(i: int) -> tuple[list[np.ndarray], tuple[Tile, torch.Tensor, torch.Tensor] | None]:
        t, image, chosen = tiles[i], None, []
        for idx, x in model.network.walk((1, *t.padded), chooser_for(i), layers):
            image = x
            chosen.append(idx)
        pixels = to_uint8(image)
        maps = [idx[0].numpy().astype(np.int64) for idx in chosen]
        kept = (
            None
            if filtering is Filtering.NONE
            else (t, pixels, refined_flags(chosen, model.postfilter.config.cells, t.padded))
        )
        if filtering is Filtering.NOW:
            _filter_tile(model, canvas, kept)
            return maps, None
        _paste(canvas, t, pixels)
        return maps, kept

    with workers():
        walked = _map(walk_tile, range(len(tiles)))
    maps: Maps = [[grids[layer] for grids, _ in walked] for layer in range(layers)]
    return _Walked(canvas, maps, [kept for _, kept in walked if kept is not None])


def _filter_tile(model: CodecModel, canvas: np.ndarray, kept: tuple[Tile, torch.Tensor, torch.Tensor]) -> None:
    """A walked tile (its padded pixels and refined flags) through the post-filter, onto ``canvas``."""
    assert model.postfilter is not None
    t, pixels, flags = kept
    _paste(canvas, t, to_uint8(model.postfilter(from_uint8(pixels), flags)))


def _filtered(model: CodecModel, walked: _Walked) -> np.ndarray:
    """The walked image with the model's post-filter run on each padded tile."""
    smooth = np.empty_like(walked.image)
    with workers():
        _map(lambda kept: _filter_tile(model, smooth, kept), walked.tiles)
    return smooth


def _bands(work: Callable[[T], R], bands: list[T]) -> list[R]:
    """The detail layer's bands on the workers (not steps of ``progress``: they are quick)."""
    return _map(work, bands, counted=False)


def _expect(model: CodecModel, width: int, height: int, tile_passes: int, detail_filtered: bool) -> None:
    """Tell ``progress`` how many tiles and strips the running encode or decode will report:
    each tile ``tile_passes`` times, each piece of the detail filter once if it runs."""
    tiles = len(plan(width, height, model.config.unit))
    pieces = math.prod(-(-n // DETAIL_STRIP) for n in (width, height))  # DETAIL_STRIP is whole blocks
    _workers.total = tiles * tile_passes + pieces * detail_filtered


def _paste(canvas: np.ndarray, t: Tile, tile_pixels: torch.Tensor) -> None:
    """A padded tile's (1, 3, h, w) uint8 tensor into its place on the (H, W, 3) canvas."""
    canvas[t.top : t.top + t.height, t.left : t.left + t.width] = (
        tile_pixels[0].permute(1, 2, 0).numpy()[: t.height, : t.width]
    )


def layer_parents(config: DDNConfig, maps: Maps, layer: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per tile (or crop), the symbol of layer ``layer - 1`` (in ``maps``) co-located with
    each cell of ``layer``, whose grids have ``shapes``."""
    specs = config.layers
    previous = maps[layer - 1] if layer else [None] * len(shapes)
    return [
        parent_grid(p, specs[layer - 1].cell if layer else 0, specs[layer].cell, shape)
        for p, shape in zip(previous, shapes, strict=True)
    ]


# ---------------------------------------------------------------- encode


@dataclass
class Encoded:
    """A .ddn file and what the encoder knows about it."""

    data: bytes
    pixels: np.ndarray  # (H, W, 3) uint8: the reconstruction, exactly what decode returns
    mode: str
    psnr: float  # of the reconstruction against the input, in the output mode
    rung: Rung
    frames: int = 1  # frames in the input file; only the first is coded

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, header and checksum included."""
        return 8 * len(self.data) / (self.width * self.height)

    def image(self) -> Image.Image:
        return imageio.from_pixels(self.pixels, self.mode)


PSNR_ROWS = 256  # rows whose squared errors are summed at once: the sum is exact, the memory bounded


def psnr(a: np.ndarray, b: np.ndarray, mode: str) -> float:
    """PSNR (dB, MAX=255) of two (H, W, 3) uint8 images as the decoder outputs them."""
    if mode == "L":
        a, b = (np.asarray(imageio.from_pixels(x, "L"))[..., None] for x in (a, b))
    squared = 0
    for top in range(0, a.shape[0], PSNR_ROWS):
        difference = a[top : top + PSNR_ROWS].astype(np.int64) - b[top : top + PSNR_ROWS]
        squared += int(np.vdot(difference, difference))
    return 10 * math.log10(255**2 * a.size / squared) if squared else math.inf


def encode_pixels(
    pixels: np.ndarray, mode: str, model: CodecModel, rung: Rung, tables: int | None = None, effort: int = 1
) -> Encoded:
    """Encode (H, W, 3) uint8 pixels at one rung: the core of every encode. ``tables``
    overrides the rung's own entropy table set (``table_set``); ``effort`` is one of EFFORTS."""
    return _finish(_code(pixels, model, rung, tables, effort), pixels, mode, model)


@dataclass
class _Coded:
    """One encoder walk at one rung, entropy-coded: all of the file but the post-filter
    flag, which changes no other byte (so a rate search can leave the filter out)."""

    rung: Rung
    tables: int
    walked: _Walked
    streams: list[bytes]

    def data(
        self,
        model: CodecModel,
        mode: str,
        filtered: bool,
        details: bytes = b"",
        step: int = 0,
        detail_filtered: bool = False,
    ) -> bytes:
        """The file, with the detail stream ``details`` of quantiser ``step`` if one is given
        (decoded through the detail filter if ``detail_filtered``)."""
        height, width = self.walked.image.shape[:2]
        lengths = tuple(len(s) for s in self.streams)
        fingerprint = model.file_fingerprint(detail_filtered)
        header = container.Header(
            fingerprint, width, height, mode, self.tables, lengths, filtered, step, len(details), detail_filtered
        )
        return container.pack(header, self.streams, details)


def _code(pixels: np.ndarray, model: CodecModel, rung: Rung, tables: int | None = None, effort: int = 1) -> _Coded:
    """Walk (H, W, 3) uint8 pixels at ``rung`` and entropy-code the index maps with table
    set ``tables`` (default: the rung's own), choosing with ``effort`` (EFFORTS)."""
    height, width = pixels.shape[:2]
    unit = model.config.unit
    tiles = plan(width, height, unit)
    tables = table_set(model, rung) if tables is None else tables

    def chooser_for(i: int) -> Chooser:
        t = tiles[i]
        target = to_tensor(imageio.pad(pixels[t.top : t.top + t.height, t.left : t.left + t.width], unit)[None])
        if effort > 1:
            return rate_aware(target, model, rung.lam * LOOKAHEAD_LAMBDA, tables, lookahead=rung.layers)
        return rate_aware(target, model, rung.lam, tables)

    filtering = Filtering.NONE if model.postfilter is None else Filtering.LATER
    walked = _walk(model, tiles, rung.layers, chooser_for, filtering)
    maps = walked.maps
    streams = [
        entropy.encode(
            maps[layer],
            layer_parents(model.config, maps, layer, [m.shape for m in maps[layer]]),
            model.priors.initial(layer, tables),
        )
        for layer in range(rung.layers)
    ]
    return _Coded(rung, tables, walked, streams)


def _decoded(coded: _Coded, pixels: np.ndarray, mode: str, model: CodecModel) -> tuple[np.ndarray, bool]:
    """What the decoder makes of a coded walk, and whether it runs the post-filter: the
    encoder's choice per file (it rarely hurts, but at the top rungs it can)."""
    walked = coded.walked
    if model.postfilter is None or not walked.tiles:  # no filter, or already decided (``image`` is the choice)
        return walked.image, walked.filtered
    smooth = _filtered(model, walked)
    if psnr(smooth, pixels, mode) > psnr(walked.image, pixels, mode):
        walked.image, walked.filtered = smooth, True
    walked.tiles = []  # the filter's inputs: no longer needed, and as large as the image
    return walked.image, walked.filtered


def _with_detail(
    pixels: np.ndarray, mode: str, decoded: np.ndarray, step: int, model: CodecModel
) -> tuple[bytes, np.ndarray, bool]:
    """The detail stream at ``step`` for a decoded DDN image, the image it decodes to, and
    whether that runs the model's detail filter (the encoder's choice: where it helps).
    A gray image's chroma is left alone: the decoder returns the mean of the channels."""
    levels = detail.residual_levels(pixels, decoded, step, run=_bands)
    if mode == "L":
        levels[1:] = 0
    image, filtered = detail.apply(decoded, levels, step, run=_bands), False
    if model.detailfilter is not None:
        smooth = _detail_filtered(model, image, levels, step)
        if psnr(smooth, pixels, mode) > psnr(image, pixels, mode):
            image, filtered = smooth, True
    return detail.encode(levels), image, filtered


DETAIL_STRIP = (
    512  # rows and columns (whole 8 px blocks) the detail filter runs on at once: bounded memory on any image
)
DETAIL_MARGIN = 64  # px of context on each side of a piece: more than the filter's reach (10 convs 3×3 at 4 px)


def _detail_filtered(model: CodecModel, pixels: np.ndarray, levels: np.ndarray, step: int) -> np.ndarray:
    """(H, W, 3) uint8 ``pixels``, a decode with its detail layer of ``levels`` at ``step``,
    through the model's detail filter, which also reads which 8×8 blocks that layer coded.
    Piece by piece of DETAIL_STRIP² px (every bound a multiple of the block), each with
    DETAIL_MARGIN px of context around it, so the output is the whole image's."""
    net = model.detailfilter
    assert net is not None
    height, width = pixels.shape[:2]
    padded = imageio.pad(pixels, detail.BLOCK)
    coded = torch.from_numpy(detail.coded_blocks(levels))[None]  # (1, block rows, block cols)
    out = np.empty_like(padded)
    rows, cols = padded.shape[:2]

    def filter_piece(corner: tuple[int, int]) -> None:
        (top, left), b = corner, detail.BLOCK
        r0, r1 = max(0, top - DETAIL_MARGIN), min(rows, top + DETAIL_STRIP + DETAIL_MARGIN)
        c0, c1 = max(0, left - DETAIL_MARGIN), min(cols, left + DETAIL_STRIP + DETAIL_MARGIN)
        x = to_tensor(padded[r0:r1, c0:c1][None])
        flags = refined_flags([coded[:, r0 // b : r1 // b, c0 // b : c1 // b]], net.config.cells, (r1 - r0, c1 - c0))
        piece = to_uint8(net(x, flags, step))[0].permute(1, 2, 0).numpy()
        bottom, right = min(rows, top + DETAIL_STRIP), min(cols, left + DETAIL_STRIP)
        out[top:bottom, left:right] = piece[top - r0 : bottom - r0, left - c0 : right - c0]

    with workers():
        _map(filter_piece, [(t, c) for t in range(0, rows, DETAIL_STRIP) for c in range(0, cols, DETAIL_STRIP)])
    return out[:height, :width]


def _finish(coded: _Coded, pixels: np.ndarray, mode: str, model: CodecModel) -> Encoded:
    """The file of a coded walk: post-filter on if it helps, then the rung's detail layer."""
    decoded, filtered = _decoded(coded, pixels, mode, model)
    return _file(coded, pixels, mode, model, decoded, filtered, coded.rung.detail)


def _file(
    coded: _Coded, pixels: np.ndarray, mode: str, model: CodecModel, decoded: np.ndarray, filtered: bool, step: int
) -> Encoded:
    """The file of a coded walk that decodes to ``decoded``, plus a detail layer at ``step`` (0: none)."""
    details, detail_filtered = b"", False
    if step:
        details, decoded, detail_filtered = _with_detail(pixels, mode, decoded, step, model)
    data = coded.data(model, mode, filtered, details, step, detail_filtered)
    rung = Rung(coded.rung.layers, coded.rung.lam, step)
    return Encoded(data, decoded, mode, psnr(decoded, pixels, mode), rung)


def _search_bpp(
    pixels: np.ndarray, mode: str, model: CodecModel, target: float, max_layers: int, effort: int
) -> Encoded:
    """The file nearest ``target`` bpp, within BPP_TOLERANCE if it can be had.

    A target above the rate of the plain rung below the ladder's first detail rung is
    searched along that rung's detail step (``_search_detail``: one walk); below that, or
    where even the coarsest step overshoots, among the plain rungs. The walks skip the post-filter (it changes no byte but a flag); only the one kept
    is filtered. First the ladder's rungs: each guess is the rung whose validation rate
    (the card's ``ladder_on_val``), scaled by what this image has measured so far, is
    nearest, until the target lies between two walked rungs, or is predicted within
    reach of λ from a walked one (``family``, or a rung nearer the target than the
    next rung is predicted: ``beyond``); then a secant search in λ along that layer
    count (and along the other rung's, if that cannot reach it)."""
    height, width = pixels.shape[:2]
    full = ladder(model)
    on_val = [p["bpp"] for p in model.card.get("ladder_on_val", [])]
    if len(on_val) != len(full):
        on_val = [2.0**i for i in range(len(full))]  # no measured rates: about a bisection
    first = next((i for i, r in enumerate(full) if r.detail and r.layers <= max_layers), None)
    if first is not None and target >= (on_val[first - 1] if first else 0.0):  # above the plain rungs below it
        found = _search_detail(pixels, mode, model, full[first], target, effort)
        if reached(found, target) or found.bpp < target:  # else the target is under what detail costs
            return found
    plain = [i for i, r in enumerate(full) if not r.detail]
    rungs = [Rung(min(full[i].layers, max_layers), full[i].lam) for i in plain]
    on_val = [on_val[i] for i in plain]
    unique = [i for i in range(len(rungs)) if rungs[i] not in rungs[:i]]  # a ladder may repeat a rung
    rungs, on_val = [rungs[i] for i in unique], [on_val[i] for i in unique]
    tried: list[tuple[Rung, int, float]] = []  # every walk's rung, table set and bpp
    best: list[_Coded] = []  # the walk nearest the target so far

    def attempt(rung: Rung, tables: int) -> bool:
        """Walk at ``rung``; whether the search is over (close enough, or out of walks)."""
        coded = _code(pixels, model, rung, tables, effort)
        bpp = 8 * len(coded.data(model, mode, False)) / (width * height)
        if not tried or abs(math.log(bpp / target)) < min(abs(math.log(b / target)) for *_, b in tried):
            best[:] = [coded]
        tried.append((rung, tables, bpp))
        return reached_bpp(bpp, target) or len(tried) >= SEARCH_WALKS

    def family(i: int, bpp: float, scale: float) -> int | None:
        """The rung λ alone can reach from ``i`` towards the target: of ``i``'s layer count,
        the nearest predicted past the target, else the last such one (the family's end,
        if it is the ladder's)."""
        step = 1 if bpp < target else -1
        j = i
        while 0 <= j + step < len(rungs) and rungs[j + step].layers == rungs[i].layers:
            j += step
            if (on_val[j] * scale - target) * step >= 0:
                return j
        return j if j != i and not 0 <= j + step < len(rungs) else None

    def beyond(i: int, bpp: float, scale: float) -> int | None:
        """The rung next to walked rung ``i`` towards the target, if the target lies
        between ``i``'s rate and that rung's predicted one and nearer ``i`` (in log
        rate): then λ most likely moves ``i`` there, and walking that rung only to
        bracket the target would be a wasted walk. It is walked only if λ cannot."""
        j = i + (1 if bpp < target else -1)
        if not 0 <= j < len(rungs):
            return None
        predicted = on_val[j] * scale
        between = (predicted - target) * (bpp - target) < 0
        return j if between and abs(math.log(bpp / target)) < abs(math.log(predicted / target)) else None

    low, high, scale = 0, len(rungs) - 1, 1.0
    start = None  # a walked rung from which λ alone can reach the target (``family``, ``beyond``)
    fallback = None  # the rung ``beyond`` start, walked if λ from start falls short
    while low <= high:
        guess = min(range(low, high + 1), key=lambda i: abs(math.log(on_val[i] * scale / target)))
        if attempt(rungs[guess], table_set(model, rungs[guess])):
            return _finish(best[0], pixels, mode, model)
        bpp = tried[-1][2]
        scale = bpp / on_val[guess]
        low, high = (guess + 1, high) if bpp < target else (low, guess - 1)
        fallback = beyond(guess, bpp, scale)
        if family(guess, bpp, scale) is not None or fallback is not None:
            start = guess
            break
    rates = {r: b for r, _, b in tried}
    walked = [i for i in range(len(rungs)) if rungs[i] in rates]
    above = min((i for i in walked if rates[rungs[i]] >= target), key=lambda i: rates[rungs[i]], default=None)
    below = max((i for i in walked if rates[rungs[i]] < target), key=lambda i: rates[rungs[i]], default=None)
    for side in dict.fromkeys(i for i in (start, above, below, fallback) if i is not None):
        rung = rungs[side]
        if rung not in rates:  # the fallback, walked only now that λ from start fell short
            if attempt(rung, table_set(model, rung)):
                break
            rates[rung] = tried[-1][2]
        bpp = rates[rung]
        j = family(side, bpp, bpp / on_val[side])  # its predicted rate guides the first step
        guide = None if j is None else (rungs[j].lam, on_val[j] * bpp / on_val[side])
        if _along_lambda(rung.layers, table_set(model, rung), guide, target, tried, attempt):
            break
    return _finish(best[0], pixels, mode, model)


def _search_detail(pixels: np.ndarray, mode: str, model: CodecModel, base: Rung, target: float, effort: int) -> Encoded:
    """The detail step that brings one walk of ``base`` nearest ``target`` bpp, re-coding the
    detail layer alone: secant steps on (log step, log bpp) inside a bracket that shrinks
    like a bisection's (the rate falls as the step grows), from the ladder's detail rung
    nearest the target (``_first_step``). A bisection took ~8 codings of the detail layer,
    each about 1 s on a Kodak image once the walk was 6 layers."""
    coded = _code(pixels, model, base, None, effort)
    decoded, filtered = _decoded(coded, pixels, mode, model)
    files: dict[int, Encoded] = {}
    fine, coarse = 0, MAX_DETAIL_STEP + 1  # steps known to give more, and less, than the target
    step = _first_step(model, target)
    while True:
        files[step] = found = _file(coded, pixels, mode, model, decoded, filtered, step)
        if reached(found, target):
            break
        fine, coarse = (fine, step) if found.bpp < target else (step, coarse)
        if coarse - fine <= 1:
            break
        step = _next_step(files, target, fine, coarse)
    return min(files.values(), key=lambda e: abs(math.log(e.bpp / target)))


DETAIL_SLOPE = 0.85
"""-d log bpp / d log step of the detail layer: the default model's detail rungs on the
validation crops (0.44 bpp at step 100 to 3.64 bpp at step 8)."""


def _first_step(model: CodecModel, target: float) -> int:
    """The step the card's validation rates predict for ``target``: from the detail rung
    whose rate there is nearest, along DETAIL_SLOPE (the middle step without rates)."""
    on_val = [p["bpp"] for p in model.card.get("ladder_on_val", [])]
    rungs = ladder(model)
    known = [(bpp, r.detail) for bpp, r in zip(on_val, rungs, strict=False) if r.detail and bpp > 0]
    if len(on_val) != len(rungs) or not known:
        return (1 + MAX_DETAIL_STEP) // 2
    bpp, step = min(known, key=lambda k: abs(math.log(k[0] / target)))
    return min(max(round(step * (bpp / target) ** (1 / DETAIL_SLOPE)), 1), MAX_DETAIL_STEP)


def _next_step(files: dict[int, Encoded], target: float, fine: int, coarse: int) -> int:
    """A secant step on (log step, log bpp) through the two codings nearest the target in
    rate (one coding: along DETAIL_SLOPE), kept inside the middle 80 % of (fine, coarse)."""
    near = sorted(files, key=lambda s: abs(math.log(files[s].bpp / target)))[:2]
    if len(near) == 2 and files[near[0]].bpp != files[near[1]].bpp:
        (s0, s1), (r0, r1) = near, (math.log(files[near[0]].bpp), math.log(files[near[1]].bpp))
        slope = (math.log(s1) - math.log(s0)) / (r1 - r0)
        guess = math.exp(math.log(s0) + slope * (math.log(target) - r0))
    else:
        guess = near[0] * (files[near[0]].bpp / target) ** (1 / DETAIL_SLOPE)
    width = coarse - fine
    low, high = fine + max(1, 0.1 * width), coarse - max(1, 0.1 * width)
    return int(min(max(round(guess), math.ceil(low)), math.floor(high))) if low <= high else (fine + coarse) // 2


def _along_lambda(
    layers: int,
    tables: int,
    guide: tuple[float, float] | None,
    target: float,
    tried: list[tuple[Rung, int, float]],
    attempt: Callable[[Rung, int], bool],
) -> bool:
    """Secant steps on (log(λ + LAMBDA_FLOOR), log bpp) at ``layers`` layers, from the walks
    already made there, with table set ``tables`` held (where the set would change with
    λ the rate jumps); whether the search is over. Inside a bracket each step stays in
    its middle 80 % (it shrinks even where the curve bends); outside one it extrapolates
    the two nearest walks, or one walk and the ``guide`` (λ, predicted bpp), or one walk
    and RATE_SLOPE, by at most STEP_LIMIT."""
    goal = math.log(target)
    while True:
        points = sorted(
            (math.log(r.lam + LAMBDA_FLOOR), math.log(b)) for r, t, b in tried if (r.layers, t) == (layers, tables)
        )
        fat = [p for p in points if p[1] > goal]  # rates above the target: raise λ
        thin = [p for p in points if p[1] <= goal]
        if fat and thin:
            (u0, r0), (u1, r1) = fat[-1], thin[0]
            if u1 - u0 < BRACKET_WIDTH:
                return False
            u = u0 + (r0 - goal) * (u1 - u0) / (r0 - r1)
            u = min(max(u, u0 + 0.1 * (u1 - u0)), u1 - 0.1 * (u1 - u0))
        else:
            near = fat[-2:] if fat else thin[:2][::-1]  # the nearest walk last
            if len(near) == 1 and guide is not None:
                near.insert(0, (math.log(guide[0] + LAMBDA_FLOOR), math.log(guide[1])))
            u_near, r_near = near[-1]
            slope = RATE_SLOPE  # -d log bpp / d log(λ + LAMBDA_FLOOR)
            if len(near) == 2 and near[0][0] != u_near and (near[0][1] - r_near) * (near[0][0] - u_near) < 0:
                slope = -(near[0][1] - r_near) / (near[0][0] - u_near)
            step = min((r_near - goal) / slope if fat else (goal - r_near) / slope, STEP_LIMIT)
            u = u_near + step if fat else u_near - step
        lam = math.exp(u) - LAMBDA_FLOOR
        if lam < LAMBDA_MIN:  # as good as λ = 0, which is as many bits as there are
            lam = 0.0
            if (Rung(layers, 0.0), tables) in ((r, t) for r, t, _ in tried):
                return False
        elif lam > LAMBDA_MAX:
            return False
        if attempt(Rung(layers, lam), tables):
            return True


def encode(
    image: imageio.ImageSource,
    model: ModelSpec = "default",
    quality: int | None = None,
    *,
    bpp: float | None = None,
    layers: int | None = None,
    effort: int = 1,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Encoded:
    """Encode an image (Pillow image, path or file bytes) on ``threads`` workers (None:
    every core; the bytes are the same for any count), reporting to ``progress``.

    ``quality`` (1..8) picks a rung of the model's ladder; ``layers`` alone codes that
    many layers with the plain nearest choice (with ``quality``: overrides its layer
    count); ``bpp`` searches for that many bits per pixel (whole file), using at most
    ``layers`` layers if given. Nothing given: ``DEFAULT_QUALITY``. ``effort`` 2 spends
    about 2.3x the encode time on a lookahead: each rung about 10 % more bits for a higher
    PSNR, 1.5 % fewer bits at equal PSNR (Kodak); decoding is the same."""
    model = load_model(model)
    count = len(model.config.layers)
    if quality is not None and quality not in QUALITIES:
        msg = f"quality must be 1..{QUALITIES[-1]}, got {quality}"
        raise OptionError(msg)
    if layers is not None and not 1 <= layers <= count:
        msg = f"layers must be 1..{count} for this model, got {layers}"
        raise OptionError(msg)
    if effort not in EFFORTS:
        msg = f"effort must be one of {', '.join(map(str, EFFORTS))}, got {effort}"
        raise OptionError(msg)
    if bpp is not None and (quality is not None or not bpp > 0 or not math.isfinite(bpp)):
        msg = "bpp must be a positive number, and not combined with quality"
        raise OptionError(msg)
    opened = imageio.open_image(image, max_pixels, model.config.unit)
    pixels, mode = imageio.to_pixels(opened)
    frames = opened.info.get("n_frames", 1)
    del opened  # the pixels are all the encoder reads of it: not a second copy of the photo in memory
    if quality is None and layers is not None:
        rung = Rung(layers, 0.0)
    else:
        rung = ladder(model)[(quality or DEFAULT_QUALITY) - 1]
        rung = Rung(layers or rung.layers, rung.lam, rung.detail)
    with workers(threads, progress):
        if bpp is not None:
            encoded = _search_bpp(pixels, mode, model, bpp, layers or count, effort)
        else:
            detail_filtered = bool(rung.detail) and model.detailfilter is not None
            _expect(model, pixels.shape[1], pixels.shape[0], 1 + (model.postfilter is not None), detail_filtered)
            encoded = encode_pixels(pixels, mode, model, rung, effort=effort)
    encoded.frames = frames
    return encoded


def reached(encoded: Encoded, bpp: float) -> bool:
    """Whether a ``bpp`` search landed within its tolerance (else it kept the closest file)."""
    return reached_bpp(encoded.bpp, bpp)


def reached_bpp(bpp: float, target: float) -> bool:
    return abs(bpp / target - 1) <= BPP_TOLERANCE


# ---------------------------------------------------------------- decode


def read_maps(parsed: container.Container, model: CodecModel, count: int | None = None) -> Maps:
    """Entropy-decode the index maps of a parsed file's first ``count`` layers (default:
    all present), for a model whose fingerprint it carries."""
    header = parsed.header
    if header.table_set >= model.priors.sets:
        msg = f"corrupt .ddn header: table set {header.table_set}, the model has {model.priors.sets}"
        raise FormatError(msg)
    tiles = plan(header.width, header.height, model.config.unit)
    maps: Maps = []
    for layer in range(len(parsed.streams) if count is None else count):
        shapes = [cells(t, model, layer) for t in tiles]
        parents = layer_parents(model.config, maps, layer, shapes)
        initial = model.priors.initial(layer, header.table_set)
        maps.append(entropy.decode(parsed.streams[layer], shapes, parents, initial))
    return maps


def read_levels(parsed: container.Container) -> np.ndarray | None:
    """The detail levels of a parsed file, in its version's layout; None if it has none."""
    if parsed.detail is None:
        return None
    header = parsed.header
    layout = detail.Layout.CHANNELS if header.legacy_detail else detail.Layout.ROWS
    return detail.decode(parsed.detail, header.height, header.width, layout)


def decode(
    data: bytes,
    model: ModelSpec | None = None,
    layers: int | None = None,
    *,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Image.Image:
    """A .ddn file's bytes -> Pillow image (RGB or L), coarser if ``layers`` is given or
    the file was cut at a layer boundary; tiles and strips on ``threads`` workers (None:
    every core; the pixels are the same for any count)."""
    return imageio.from_pixels(
        *decode_pixels(data, model, layers, max_pixels=max_pixels, threads=threads, progress=progress)
    )


def decode_pixels(
    data: bytes,
    model: ModelSpec | None = None,
    layers: int | None = None,
    *,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, str]:
    """As ``decode``, returning (H, W, 3) uint8 pixels and the mode."""
    parsed = container.unpack(bytes(data), max_pixels)
    header = parsed.header
    model = model_for(header, "default" if model is None else model)
    if header.layers > len(model.config.layers):
        msg = f"corrupt .ddn header: {header.layers} layers, the model has {len(model.config.layers)}"
        raise FormatError(msg)
    present = len(parsed.streams)
    if layers is not None and not 1 <= layers <= present:
        msg = f"layers must be 1..{present} for this file, got {layers}"
        raise OptionError(msg)
    count = present if layers is None else layers
    imageio.check_padded(header.width, header.height, model.config.unit, max_pixels)
    if header.filtered and model.postfilter is None:
        msg = "corrupt .ddn header: the post-filter flag is set, and the model has no post-filter"
        raise FormatError(msg)
    if header.detail_filtered and model.detailfilter is None:
        msg = "corrupt .ddn header: the file runs the detail filter, and the model has none"
        raise FormatError(msg)
    tiles = plan(header.width, header.height, model.config.unit)
    maps = read_maps(parsed, model, count)
    # Every stream is decoded before the network runs: a corrupt one costs no network time.
    levels = read_levels(parsed) if count == header.layers else None

    def chooser_for(i: int) -> Chooser:
        return lambda layer, _options: torch.from_numpy(maps[layer][i])[None]

    with workers(threads, progress):
        _expect(model, header.width, header.height, 1, levels is not None and header.detail_filtered)
        pixels = _walk(model, tiles, count, chooser_for, Filtering.NOW if header.filtered else Filtering.NONE).image
        if levels is not None:
            detail.apply(pixels, levels, header.detail_step, out=pixels, run=_bands)
            if header.detail_filtered:
                pixels = _detail_filtered(model, pixels, levels, header.detail_step)
    return pixels, header.mode
