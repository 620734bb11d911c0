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

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddncodec import container, entropy, imageio
from ddncodec.context import parent_grid, parent_positions
from ddncodec.data import to_tensor
from ddncodec.errors import FormatError, InputError, OptionError
from ddncodec.ladder import QUALITIES, Rung
from ddncodec.ladder import fallback as fallback_ladder
from ddncodec.model import Candidates, Chooser, DDNConfig
from ddncodec.modelfile import CodecModel, load, resolve
from ddncodec.postfilter import from_uint8, refined_flags, to_uint8

TILE = 1024  # px: the largest tile side; part of the format
DEFAULT_QUALITY = 5
BPP_TOLERANCE = 0.04  # the --bpp search stops this close to the target (relative)
LAMBDA_START = 1000.0  # the --bpp search's first step up from λ = 0
LAMBDA_MIN, LAMBDA_MAX = 1.0, 1e7  # below: as good as 0; above: every cell takes its cheapest symbol

ModelSpec = CodecModel | str | os.PathLike


# ---------------------------------------------------------------- models


_loaded: dict[tuple[Path, int, int], CodecModel] = {}


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
        _loaded.clear()  # one model version per process is the common case; don't pile them up
        _loaded[key] = load(path)
    return _loaded[key]


# ---------------------------------------------------------------- rate control


def ladder(model: CodecModel) -> tuple[Rung, ...]:
    """The model's own ladder (tuned on validation data) or the fallback."""
    return model.ladder or fallback_ladder(len(model.config.layers))


def table_set(model: CodecModel, rung: Rung) -> int:
    """The entropy table set for ``rung``: the set of the ladder rung it is, else of the
    rung nearest in log(1 + λ), then in layers (``tune`` counts one set per rung)."""
    rungs = ladder(model)[: model.priors.sets]
    if len(rungs) < model.priors.sets or model.priors.sets == 1:
        return 0
    return min(
        range(len(rungs)),
        key=lambda i: (abs(math.log1p(rungs[i].lam) - math.log1p(rung.lam)), abs(rungs[i].layers - rung.layers)),
    )


def rate_aware(
    target: torch.Tensor, model: CodecModel, lam: float | torch.Tensor, tables: int | torch.Tensor = 0
) -> Chooser:
    """Per cell, argmin over candidates of SSE (8-bit levels²) + λ·bits, bits the code
    length under table set ``tables`` given whether the co-located cell of the layer
    before kept (the context model's part that is known before a layer is chosen).

    ``lam`` and ``tables`` are one value for the batch or one per image ((B,) tensors:
    training prices every crop at its own rung)."""
    specs, b = model.config.layers, target.shape[0]
    weight = torch.as_tensor(lam, dtype=torch.float32, device=target.device).expand(b).reshape(b, 1, 1, 1)
    used, which = torch.as_tensor(tables, dtype=torch.long).expand(b).unique(return_inverse=True)
    bits = []  # per layer, (B, 2, K): each image's code lengths by parent-kept
    for i in range(len(specs) if bool(weight.any()) else 0):
        by_set = np.stack([model.priors.bits_by_parent(i, int(t)) for t in used])  # only the sets in use
        bits.append(torch.from_numpy(by_set).float()[which].to(target.device))
    chosen: dict[int, torch.Tensor] = {}  # this walk's choices so far, by layer
    images = torch.arange(b, device=target.device)[:, None, None]

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        cost = options.cost(target)
        if bits:
            _, _, rows, cols = cost.shape
            if layer:
                above, cell, previous_cell = chosen[layer - 1], specs[layer].cell, specs[layer - 1].cell
                r = torch.from_numpy(parent_positions(rows, cell, previous_cell, above.shape[1]))
                c = torch.from_numpy(parent_positions(cols, cell, previous_cell, above.shape[2]))
                kept = (above[:, r][:, :, c] == 0).long()
            else:
                kept = torch.zeros(b, rows, cols, dtype=torch.long, device=cost.device)
            cost = cost * 255.0**2 + weight * bits[layer][images, kept].permute(0, 3, 1, 2)
        idx = cost.argmin(1)
        chosen[layer] = idx
        return idx

    return choose


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


def _padded_length(length: int, unit: int) -> int:
    """Σ of ``_spans(length, unit)`` each padded to ``unit``, without listing the spans
    (a hostile header may claim 10⁸ px a side)."""
    parts = -(-length // TILE)
    step = unit * -(-length // (parts * unit))
    whole, rest = divmod(length, step)
    return whole * step + -(-rest // unit) * unit


def plan(width: int, height: int, unit: int) -> list[Tile]:
    """The tiles of an image, in raster order (the order of their symbols in every stream)."""
    return [Tile(t, left, h, w, unit) for t, h in _spans(height, unit) for left, w in _spans(width, unit)]


def cells(tile: Tile, model: CodecModel, layer: int) -> tuple[int, int]:
    """The (rows, columns) of ``layer``'s cell grid over ``tile``."""
    cell = model.config.layers[layer].cell
    ph, pw = tile.padded
    return ph // cell, pw // cell


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting.

    oneDNN picks convolution kernels, and with them the order of float sums, by thread
    count and batch size; a last-bit difference can flip a pixel's 8-bit rounding. One
    thread and one tile at a time make the decoded pixels the same whatever the caller's
    thread count, and always equal to the encoder's reconstruction."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


Maps = list[list[np.ndarray]]
"""Index maps of a walk: per layer, per tile, the (rows, columns) grid of chosen symbols."""


def _render(
    model: CodecModel, tiles: list[Tile], layers: int, chooser_for: Callable[[int], Chooser], filtered: bool
) -> tuple[np.ndarray, np.ndarray | None, Maps]:
    """Walk the generator over each tile with the chooser ``chooser_for(tile index)``: the
    8-bit (H, W, 3) image of the result, the same with the model's post-filter run on
    each padded tile if ``filtered`` (else None), and the index maps chosen."""
    height = max(t.top + t.height for t in tiles)
    width = max(t.left + t.width for t in tiles)
    plain = np.empty((height, width, 3), dtype=np.uint8)
    smooth = np.empty_like(plain) if filtered else None
    maps: Maps = [[] for _ in range(layers)]
    with _one_thread(), torch.inference_mode():
        for i, t in enumerate(tiles):
            image, chosen = None, []
            for layer, (idx, x) in enumerate(model.network.walk((1, *t.padded), chooser_for(i), layers)):
                maps[layer].append(idx[0].numpy().astype(np.int64))
                image = x
                chosen.append(idx)
            pixels = to_uint8(image)
            outputs = [(plain, pixels)]
            if smooth is not None:
                flags = refined_flags(chosen, model.postfilter.config.cells, t.padded)
                outputs.append((smooth, to_uint8(model.postfilter(from_uint8(pixels), flags))))
            for canvas, tile_pixels in outputs:
                cropped = tile_pixels[0].permute(1, 2, 0).numpy()[: t.height, : t.width]
                canvas[t.top : t.top + t.height, t.left : t.left + t.width] = cropped
    return plain, smooth, maps


def layer_parents(config: DDNConfig, maps: Maps, layer: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per tile (or crop), the symbol of layer ``layer - 1`` (in ``maps``) co-located with
    each cell of ``layer``, whose grids have ``shapes``."""
    specs = config.layers
    previous = maps[layer - 1] if layer else [None] * len(shapes)
    return [
        parent_grid(p, specs[layer - 1].cell if layer else 0, specs[layer].cell, shape)
        for p, shape in zip(previous, shapes, strict=True)
    ]


def check_padded_pixels(width: int, height: int, unit: int, max_pixels: int) -> None:
    """Refuse an image whose padded tiles exceed the pixel limit: work grows with padded
    pixels, and a 200000×1 image pads to 32 rows."""
    padded = _padded_length(width, unit) * _padded_length(height, unit)
    if padded > max_pixels:
        msg = f"a {width}x{height} image pads to {padded:,} pixels, over the limit of {max_pixels:,}"
        raise InputError(msg)


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


def psnr(a: np.ndarray, b: np.ndarray, mode: str) -> float:
    """PSNR (dB, MAX=255) of two (H, W, 3) uint8 images as the decoder outputs them."""
    if mode == "L":
        a, b = (np.asarray(imageio.from_pixels(x, "L"))[..., None] for x in (a, b))
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf


def encode_pixels(pixels: np.ndarray, mode: str, model: CodecModel, rung: Rung) -> Encoded:
    """Encode (H, W, 3) uint8 pixels at one rung: the core of every encode."""
    height, width = pixels.shape[:2]
    unit = model.config.unit
    tiles = plan(width, height, unit)
    tables = table_set(model, rung)

    def chooser_for(i: int) -> Chooser:
        t = tiles[i]
        target = to_tensor(imageio.pad(pixels[t.top : t.top + t.height, t.left : t.left + t.width], unit)[None])
        return rate_aware(target, model, rung.lam, tables)

    plain, smooth, maps = _render(model, tiles, rung.layers, chooser_for, model.postfilter is not None)
    # The post-filter is the encoder's choice per file: it rarely hurts, but at the top
    # rungs it can, and the decoder runs it only when the header says so.
    quality = psnr(plain, pixels, mode)
    filtered = False
    if smooth is not None:
        smooth_quality = psnr(smooth, pixels, mode)
        filtered = smooth_quality > quality
    reconstruction, quality = (smooth, smooth_quality) if filtered else (plain, quality)
    streams = [
        entropy.encode(
            maps[layer],
            layer_parents(model.config, maps, layer, [m.shape for m in maps[layer]]),
            model.priors.initial(layer, tables),
        )
        for layer in range(rung.layers)
    ]
    header = container.Header(
        model.fingerprint[: container.FINGERPRINT_BYTES],
        width,
        height,
        mode,
        tables,
        tuple(len(s) for s in streams),
        filtered,
    )
    data = container.pack(header, streams)
    return Encoded(data, reconstruction, mode, quality, rung)


def _search_bpp(pixels: np.ndarray, mode: str, model: CodecModel, target: float, max_layers: int) -> Encoded:
    """Full encodes until the whole file lands within BPP_TOLERANCE of ``target`` bpp,
    else the closest one tried. Bisection over the ladder (its rungs lie on the
    validation rate-distortion front) finds the two rungs around the target; then a
    geometric bisection on λ moves along the upper rung's layer count towards fewer
    bits, and if that cannot get low enough, along the lower rung's towards more."""
    rungs = [Rung(min(r.layers, max_layers), r.lam) for r in ladder(model)]
    best: Encoded | None = None

    def attempt(layers: int, lam: float) -> Encoded:
        nonlocal best
        e = encode_pixels(pixels, mode, model, Rung(layers, lam))
        if best is None or abs(e.bpp / target - 1) < abs(best.bpp / target - 1):
            best = e
        return e

    def close(e: Encoded) -> bool:
        return reached(e, target)

    def along_lambda(layers: int, lam: float, rate_above: bool) -> Encoded | None:
        """From ``lam``, whose rate lies above (or below) the target, to the λ that hits it."""
        fat, thin = (lam, math.inf) if rate_above else (0.0, lam)  # rates above / below the target
        while thin / max(fat, 1e-9) > 1.05:
            lam = max(fat * 4, LAMBDA_START) if thin == math.inf else thin / 4 if fat == 0 else math.sqrt(fat * thin)
            if not LAMBDA_MIN <= lam <= LAMBDA_MAX:
                return None
            e = attempt(layers, lam)
            if close(e):
                return e
            fat, thin = (lam, thin) if e.bpp > target else (fat, lam)
        return None

    low, high = 0, len(rungs) - 1
    below = above = None  # the nearest rungs with rates below / above the target
    while low <= high:
        mid = (low + high) // 2
        e = attempt(rungs[mid].layers, rungs[mid].lam)
        if close(e):
            return e
        if e.bpp < target:
            below, low = rungs[mid], mid + 1
        else:
            above, high = rungs[mid], mid - 1
    found = None
    if above is not None:
        found = along_lambda(above.layers, above.lam, rate_above=True)
    if found is None and below is not None and below.lam > 0:
        found = along_lambda(below.layers, below.lam, rate_above=False)
    assert best is not None  # the ladder has rungs, so at least one encode ran
    return found or best


def encode(
    image: imageio.ImageSource,
    model: ModelSpec = "default",
    quality: int | None = None,
    *,
    bpp: float | None = None,
    layers: int | None = None,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
) -> Encoded:
    """Encode an image (Pillow image, path or file bytes).

    ``quality`` (1..8) picks a rung of the model's ladder; ``layers`` alone codes that
    many layers with the plain nearest choice (with ``quality``: overrides its layer
    count); ``bpp`` searches for that many bits per pixel (whole file), using at most
    ``layers`` layers if given. Nothing given: ``DEFAULT_QUALITY``."""
    model = load_model(model)
    count = len(model.config.layers)
    if quality is not None and quality not in QUALITIES:
        msg = f"quality must be 1..{QUALITIES[-1]}, got {quality}"
        raise OptionError(msg)
    if layers is not None and not 1 <= layers <= count:
        msg = f"layers must be 1..{count} for this model, got {layers}"
        raise OptionError(msg)
    if bpp is not None and (quality is not None or not bpp > 0 or not math.isfinite(bpp)):
        msg = "bpp must be a positive number, and not combined with quality"
        raise OptionError(msg)
    opened = imageio.open_image(image, max_pixels)
    pixels, mode = imageio.to_pixels(opened)
    check_padded_pixels(pixels.shape[1], pixels.shape[0], model.config.unit, max_pixels)
    if bpp is not None:
        encoded = _search_bpp(pixels, mode, model, bpp, layers or count)
    else:
        if quality is None and layers is not None:
            rung = Rung(layers, 0.0)
        else:
            rung = ladder(model)[(quality or DEFAULT_QUALITY) - 1]
            rung = Rung(layers or rung.layers, rung.lam)
        encoded = encode_pixels(pixels, mode, model, rung)
    encoded.frames = opened.info.get("n_frames", 1)
    return encoded


def reached(encoded: Encoded, bpp: float) -> bool:
    """Whether a ``bpp`` search landed within its tolerance (else it kept the closest file)."""
    return abs(encoded.bpp / bpp - 1) <= BPP_TOLERANCE


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


def decode(
    data: bytes,
    model: ModelSpec | None = None,
    layers: int | None = None,
    *,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """A .ddn file's bytes -> Pillow image (RGB or L), coarser if ``layers`` is given or
    the file was cut at a layer boundary."""
    return imageio.from_pixels(*decode_pixels(data, model, layers, max_pixels=max_pixels))


def decode_pixels(
    data: bytes,
    model: ModelSpec | None = None,
    layers: int | None = None,
    *,
    max_pixels: int = container.DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, str]:
    """As ``decode``, returning (H, W, 3) uint8 pixels and the mode."""
    parsed = container.unpack(bytes(data), max_pixels)
    header = parsed.header
    model = load_model("default" if model is None else model)
    if header.fingerprint != model.fingerprint[: container.FINGERPRINT_BYTES]:
        msg = (
            f"this .ddn file was made with another model (fingerprint {header.fingerprint.hex()}); "
            f"the model in use is {model.fingerprint[: container.FINGERPRINT_BYTES].hex()}; decode it with the model that made it"
        )
        raise FormatError(msg)
    if header.layers > len(model.config.layers):
        msg = f"corrupt .ddn header: {header.layers} layers, the model has {len(model.config.layers)}"
        raise FormatError(msg)
    present = len(parsed.streams)
    if layers is not None and not 1 <= layers <= present:
        msg = f"layers must be 1..{present} for this file, got {layers}"
        raise OptionError(msg)
    count = present if layers is None else layers
    check_padded_pixels(header.width, header.height, model.config.unit, max_pixels)
    if header.filtered and model.postfilter is None:
        msg = "corrupt .ddn header: the post-filter flag is set, and the model has no post-filter"
        raise FormatError(msg)
    tiles = plan(header.width, header.height, model.config.unit)
    maps = read_maps(parsed, model, count)

    def chooser_for(i: int) -> Chooser:
        return lambda layer, _options: torch.from_numpy(maps[layer][i])[None]

    plain, smooth, _ = _render(model, tiles, count, chooser_for, header.filtered)
    return (smooth if smooth is not None else plain), header.mode
