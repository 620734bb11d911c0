"""DDN's own gifts: the network that compresses also samples, and any black-box scorer
can steer it with no gradients and no retraining (zero-shot conditional generation).

Every task here is only a different chooser for ``DDN.walk``::

    sample   per cell, a symbol drawn from the context model     -> a new image
             (the decoder's adaptive odds, so neighbouring cells cohere; or independently)
    guide    per cell, the candidate a scorer likes best         -> an image matching a condition
             (superres: area-downsampled L2, colorize: luminance L2, inpaint: L2 on known pixels),
             each layer's image projected onto the condition before the next layer reads it
    tree     per cell, the nearest candidate, and a picture of the K children of every level

A scorer sees whole candidate images, a chunk of the K at a time, and returns a cost
per pixel (lower is better); the chooser pools it per cell. A cell whose scorer cannot
tell its candidates apart (inside an inpainting hole) is decided by its neighbourhood.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

from ddncodec import imageio
from ddncodec.atomic import write_atomically
from ddncodec.codec import table_set
from ddncodec.context import HalfRow, code_layer, parent_grid
from ddncodec.data import to_tensor
from ddncodec.errors import InputError, OptionError
from ddncodec.ladder import Rung
from ddncodec.model import Candidates, Chooser, Projection, nearest
from ddncodec.modelfile import CodecModel
from ddncodec.priors import Priors

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""Candidate images (B, k, 3, H, W) in [-0.5, 0.5] -> cost per pixel (B, k, H, W), lower is
better. Called on chunks of a layer's K candidates, forward only: any black box will do."""

Transform = Callable[[torch.Tensor], torch.Tensor]
"""An image (B, 3, H, W) -> the image moved towards a condition (see ``Condition``)."""

Pick = Literal["best", "top2"]
Prior = Literal["context", "learned", "uniform"]

MAX_SIDE = 8192  # px; a guard against sizes that would only exhaust memory
MAX_GENERATED_PIXELS = 1 << 24
CHUNK_VALUES = 1 << 25  # floats of candidate images scored at once (128 MB)
PRIOR_WEIGHT = 1e-3  # cost per bit of a symbol's code length; see guided_chooser
NEAR_TIE = 0.05
"""``top2`` draws between a cell's two best candidates only where the second costs at most
this much more (relative): drawing everywhere put noise in every cell, and the mean of four
such walks lost 3.4 dB against bicubic on x4 super-resolution (6 ``bsds500/val`` images);
with the tie rule it is +0.26 dB, as one ``best`` walk."""
EXACT_ROUNDS = 8  # alternations of the exact super-resolution projection and clipping
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L")


# ---------------------------------------------------------------- choosers


def score_cells(options: Candidates, scorer: Scorer) -> torch.Tensor:
    """Mean scorer cost of every candidate in every cell, (B, K, H/cell, W/cell), computed in
    chunks of candidates so that a large image never holds all K at once."""
    per_image = options.base[0].numel() * options.base.shape[0]
    chunk = max(1, CHUNK_VALUES // per_image)
    costs = []
    for start in range(0, options.k, chunk):
        cost = scorer(options.images(start, min(start + chunk, options.k)))  # (B, c, H, W)
        costs.append(F.avg_pool2d(cost, options.spec.cell))
    return torch.cat(costs, 1)


def decide_by_neighbours(cost: torch.Tensor) -> torch.Tensor:
    """Cells where every candidate costs the same (no evidence, e.g. an inpainting hole) take
    the mean cost of the cells around them, in windows that double until they can tell the
    candidates apart. Constant costs add the same to every candidate, so they never bias it."""
    cost = cost.clone()
    undecided = cost.amax(1) == cost.amin(1)  # (B, h, w)
    radius, widest = 1, max(cost.shape[-2:])
    while undecided.any() and radius < 2 * widest:
        r = min(radius, widest)
        around = F.avg_pool2d(F.pad(cost, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)
        cost = torch.where(undecided.unsqueeze(1), around, cost)
        undecided = cost.amax(1) == cost.amin(1)
        radius *= 2
    return cost


def guided_chooser(
    scorer: Scorer,
    pick: Pick = "best",
    generator: torch.Generator | None = None,
    priors: Priors | None = None,
    prior_weight: float = 0.0,
) -> Chooser:
    """Per cell, the candidate the scorer ranks first (``best``), or one of its two best
    at random where they are nearly tied (``top2``, the author's choice for diversity; see
    NEAR_TIE). With ``priors``, every candidate also pays ``prior_weight`` per bit of its
    symbol's code length (-log2 p): a MAP choice, the codec's D + λR, that stops fine
    layers from fitting noise to the condition where it pins little down (a 4 px cell
    under a x4 super-resolution pixel)."""

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        cost = decide_by_neighbours(score_cells(options, scorer))
        if priors is not None and prior_weight:
            cost = cost + prior_weight * torch.from_numpy(priors.bits(layer)).to(cost).view(1, -1, 1, 1)
        if pick == "best":
            return cost.argmin(1)
        two = cost.topk(2, dim=1, largest=False)  # (B, 2, h, w)
        coin = torch.randint(2, (two.indices.shape[0], 1, *two.indices.shape[2:]), generator=generator)
        tied = two.values[:, 1:] - two.values[:, :1] <= NEAR_TIE * two.values[:, :1].abs()
        return two.indices.gather(1, coin.to(two.indices.device) * tied).squeeze(1)

    return choose


def context_chooser(model: CodecModel, generator: torch.Generator, temperature: float = 1.0) -> Chooser:
    """Per layer, an index map drawn cell by cell from the context model's adaptive odds:
    the decoder's walk (``context.code_layer``) with a random draw in place of the
    arithmetic decoder. A symbol's odds rise with its neighbours' use of it and with the
    layer before keeping, so symbols come in coherent patches, as in a photo's maps.
    Odds are raised to 1/``temperature`` (< 1: the likelier symbols, > 1: flatter), from
    the table set of the model's plain-nearest top rung (what photos' maps look like)."""
    specs = model.config.layers
    tables = table_set(model, Rung(len(specs), 0.0))
    grids: list[np.ndarray] = []

    def draw(_tile: int, _step: HalfRow, freq: np.ndarray) -> np.ndarray:
        odds = torch.from_numpy(freq).double().pow(1 / temperature)
        return torch.multinomial(odds / odds.sum(1, keepdim=True), 1, generator=generator)[:, 0].numpy()

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        if options.base.shape[0] != 1:
            msg = "the context sampler draws one image at a time"
            raise ValueError(msg)
        cell = specs[layer].cell
        shape = (options.base.shape[-2] // cell, options.base.shape[-1] // cell)
        if layer == 0:
            grids.clear()  # a new image
        previous, previous_cell = (grids[-1], specs[layer - 1].cell) if layer else (None, cell)
        grid = np.zeros(shape, dtype=np.int64)
        code_layer(
            model.priors.initial(layer, tables), [grid], [parent_grid(previous, previous_cell, cell, shape)], draw
        )
        grids.append(grid)
        return torch.from_numpy(grid)[None].to(options.base.device)

    return choose


def random_chooser(model: CodecModel, prior: Prior, generator: torch.Generator) -> Chooser:
    """Per cell, a random symbol: uniform over all K (the paper's sampler), or drawn from
    the model's learned per-layer frequencies (how often training images use each symbol).
    Split-and-Prune evens out the heads' shares, not that of symbol 0 ("keep"), which
    training images use far more than 1/K in fine layers; uniform draws therefore
    over-sharpen (mean |horizontal gradient| 24.7 vs 13.3 learned, 9.7 for BSDS val photos,
    measured with a 495-step "base" model)."""

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        b, _, height, width = options.base.shape
        grid = (b, height // options.spec.cell, width // options.spec.cell)
        if prior == "uniform":
            idx = torch.randint(options.k, grid, generator=generator)
        else:
            probs = torch.from_numpy(model.priors.probabilities(layer))
            idx = torch.multinomial(probs, math.prod(grid), replacement=True, generator=generator).view(grid)
        return idx.to(options.base.device)

    return choose


# ---------------------------------------------------------------- walks


def padded(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height), checked against the size limits."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        msg = f"size {text!r} is not WxH (e.g. 256x192)"
        raise OptionError(msg)
    width, height = int(match[1]), int(match[2])
    check_size(width, height)
    return width, height


def check_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_GENERATED_PIXELS):
        msg = (
            f"image size {width}x{height} is out of range (1..{MAX_SIDE} px a side, at most {MAX_GENERATED_PIXELS} px)"
        )
        raise OptionError(msg)


@torch.no_grad()
def run(
    model: CodecModel,
    choose: Chooser,
    width: int,
    height: int,
    layers: int | None = None,
    multiple: int = 1,
    project: Projection | None = None,
) -> torch.Tensor:
    """Walk every layer (or the first ``layers``) with ``choose`` (and ``project``) on the size
    padded to multiples of the model's unit and of ``multiple``; the final image cropped to
    (1, 3, height, width)."""
    check_size(width, height)
    unit = math.lcm(model.config.unit, multiple)
    steps = model.network.walk((1, padded(height, unit), padded(width, unit)), choose, layers, project)
    _, image = deque(steps, maxlen=1)[0]  # only the last layer's image is kept
    return image[..., :height, :width]


def sample(
    model: CodecModel,
    count: int,
    width: int,
    height: int,
    seed: int = 0,
    prior: Prior = "context",
    layers: int | None = None,
    temperature: float = 1.0,
) -> Iterator[Image.Image]:
    """``count`` images from random index paths, made one at a time from one seeded
    generator (so a larger run starts with the same images). ``prior``: ``context`` draws
    from the context model (``context_chooser``, with ``temperature``); ``learned`` and
    ``uniform`` draw every cell on its own (``random_chooser``)."""
    if not 0 < temperature <= 100:
        msg = f"temperature must be in (0, 100], got {temperature}"
        raise OptionError(msg)
    generator = torch.Generator().manual_seed(seed)
    if prior == "context":
        choose = context_chooser(model, generator, temperature)
    else:
        choose = random_chooser(model, prior, generator)
    for _ in range(count):
        yield to_image(run(model, choose, width, height, layers=layers))


def guide(
    model: CodecModel,
    scorer: Scorer,
    width: int,
    height: int,
    pick: Pick = "best",
    seed: int = 0,
    prior_weight: float = PRIOR_WEIGHT,
    layers: int | None = None,
    multiple: int = 1,
    project: Projection | None = None,
) -> torch.Tensor:
    """The image (1, 3, height, width) whose every cell, at every layer, takes the candidate
    ``scorer`` prefers (plus ``prior_weight`` per bit of its symbol, see ``guided_chooser``),
    each layer's image replaced by ``project``'s before the next layer builds on it.
    The scorer sees images of the padded size: multiples of the model's unit and of ``multiple``."""
    generator = torch.Generator().manual_seed(seed)
    choose = guided_chooser(scorer, pick, generator, model.priors, prior_weight)
    return run(model, choose, width, height, layers, multiple, project)


# ---------------------------------------------------------------- scorers


def superres_scorer(low: torch.Tensor, scale: int) -> Scorer:
    """L2 between each candidate, area-downsampled by ``scale``, and ``low`` (B, 3, h, w);
    every high-resolution pixel carries its low-resolution pixel's error."""

    def score(images: torch.Tensor) -> torch.Tensor:
        b, k, c, height, width = images.shape
        down = F.avg_pool2d(images.reshape(b * k, c, height, width), scale).view(b, k, c, *low.shape[-2:])
        err = (down - low.unsqueeze(1)).pow(2).sum(2)  # (B, k, h, w)
        return err.repeat_interleave(scale, -2).repeat_interleave(scale, -1)

    return score


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., H, W) luma, with the weights Pillow uses for grayscale."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * weights).sum(-3)


def with_luminance(images: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W) with their luminance replaced by ``luma`` (B, H, W) and their
    chroma (RGB minus luma, which has no luma of its own) kept, scaled down only where it
    would leave the RGB range around the new luma."""
    y = luma.unsqueeze(1)
    chroma = images - luminance(images).unsqueeze(1)
    room = torch.where(chroma > 0, 0.5 - y, -0.5 - y) / chroma  # per channel: how much chroma fits
    fits = torch.where(chroma.abs() > 1e-9, room, torch.ones_like(room)).amin(1, keepdim=True)
    return y + fits.clamp(0, 1) * chroma


def luminance_scorer(gray: torch.Tensor) -> Scorer:
    """L2 between each candidate's luminance and ``gray`` (B, 1, H, W): colour is left free."""
    return lambda images: (luminance(images) - gray).pow(2)


def masked_scorer(image: torch.Tensor, known: torch.Tensor) -> Scorer:
    """L2 to ``image`` (B, 3, H, W) on the pixels where ``known`` (B, 1, H, W) is 1 only."""
    return lambda images: (images - image.unsqueeze(1)).pow(2).sum(2) * known


# ---------------------------------------------------------------- projections


def superres_projection(low: torch.Tensor, scale: int, smooth_steps: int = 0, exact: bool = True) -> Transform:
    """Moves an image onto the images whose ``scale``-fold area downsampling is ``low``
    (1, 3, h, w). ``smooth_steps`` of back-projection add the low-resolution error
    bicubically upsampled (smooth: no block edges, nearly consistent after a few); the
    ``exact`` steps then add each block's remaining error to all its pixels (the L2-nearest
    consistent image) and clip to the pixel range, alternately, until both nearly hold."""

    def project(x: torch.Tensor) -> torch.Tensor:
        for _ in range(smooth_steps):
            error = low - F.avg_pool2d(x, scale)
            x = x + F.interpolate(error, scale_factor=scale, mode="bicubic", align_corners=False)
        for _ in range(EXACT_ROUNDS if exact else 0):
            error = low - F.avg_pool2d(x, scale)
            x = (x + error.repeat_interleave(scale, -2).repeat_interleave(scale, -1)).clamp(-0.5, 0.5)
        return x

    return project


def spread_into(values: torch.Tensor, known: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian-weighted mean of ``values`` (B, C, H, W) over the pixels where ``known``
    (B, 1, H, W) is 1, at every pixel (normalised convolution): a smooth fill of the rest."""
    radius = max(1, int(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=values.dtype) / sigma) ** 2)

    def blur(t: torch.Tensor) -> torch.Tensor:
        c = t.shape[1]
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0)), taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(F.pad(t, (0, 0, radius, radius)), taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    return blur(values * known) / blur(known).clamp(min=1e-12)


def hole_sigma(hole: torch.Tensor) -> float:
    """A quarter of the hole's shorter side (bounding box), the blur fill's scale."""
    rows = hole[0, 0].any(1).nonzero()
    cols = hole[0, 0].any(0).nonzero()
    return max(1.0, min(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1) / 4)


def blend_fill(fill: torch.Tensor, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``image`` with ``fill`` in the hole, shifted there by a smooth correction that meets
    the known pixels: the fill's mismatch on the known pixels, spread into the hole. Its
    low frequencies are the blur fill's, its detail the fill's own."""
    known = 1 - hole
    correction = spread_into(image - fill, known, hole_sigma(hole))
    return torch.where(hole.bool(), fill + correction, image)


# ---------------------------------------------------------------- image tasks

Task = Literal["superres", "colorize", "inpaint"]


def read_image(path: Path) -> Image.Image:
    """An upright image from a file, InputError if it is unreadable or over the size limit."""
    return imageio.open_image(path, MAX_GENERATED_PIXELS)


def from_image(image: Image.Image, unit: int = 1) -> torch.Tensor:
    """PIL image (any mode) -> (1, 3, H, W) in [-0.5, 0.5], edge-padded to multiples of ``unit``."""
    return to_tensor(imageio.pad(imageio.to_pixels(image)[0], unit)[None])


def to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-0.5, 0.5] -> 8-bit RGB PIL image."""
    pixels = ((x[0] + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())


def image_format(path: Path) -> str:
    """The Pillow format an output path's suffix names; checked before any work is done."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        msg = f"{path}: unknown image file extension (use .png)"
        raise OptionError(msg)
    return fmt


def save(image: Image.Image, path: Path) -> None:
    """Write ``image`` in the format its suffix names, atomically (temp file + rename), so a
    failure never leaves a half-written file."""
    fmt = image_format(path)
    write_atomically(path, lambda tmp: image.save(tmp, format=fmt))


def hole_of(mask: Image.Image, size: tuple[int, int], unit: int = 1) -> torch.Tensor:
    """(1, 1, H, W), 1 where the mask is light (mean of R, G, B >= 128): the pixels to
    fill; edge-padded to multiples of ``unit``."""
    if mask.size != size:
        msg = f"mask is {mask.size[0]}x{mask.size[1]}, the condition is {size[0]}x{size[1]}"
        raise InputError(msg)
    pixels = imageio.pad(imageio.to_pixels(mask)[0], unit)
    return torch.from_numpy(pixels.mean(2) >= 128).float()[None, None]


@dataclass(frozen=True)
class Condition:
    """What a task asks of its output: the scorer that guides the walk, the output size,
    and the maps that make an image agree with the condition, per layer (on the padded
    walk) and once at the end (on the output)."""

    scorer: Scorer
    width: int
    height: int
    multiple: int = 1  # the walk's size must also be a multiple of this
    project: Transform | None = None
    finish: Transform | None = None


def condition(
    model: CodecModel, task: Task, image: Image.Image, mask: Image.Image | None = None, scale: int = 4
) -> Condition:
    """The Condition of ``task`` from a PIL image (and mask): ``superres`` (output ``scale``
    times larger, its area downsampling the image), ``colorize`` (the image's luminance),
    ``inpaint`` (the image outside the light pixels of ``mask``)."""
    if (mask is not None) != (task == "inpaint"):
        msg = "a mask is needed for inpaint, and only for inpaint"
        raise OptionError(msg)
    width, height = image.size
    unit = model.config.unit
    if task == "superres":
        if scale < 2:
            msg = f"super-resolution scale must be at least 2, got {scale}"
            raise OptionError(msg)
        check_size(width * scale, height * scale)
        low = from_image(image, math.lcm(unit, scale) // scale)  # padded output: whole low pixels
        per_layer = superres_projection(low, scale, smooth_steps=2, exact=False)
        final = superres_projection(low[..., :height, :width], scale, smooth_steps=10)
        return Condition(superres_scorer(low, scale), width * scale, height * scale, scale, per_layer, final)
    check_size(width, height)
    x = from_image(image, unit)
    crop = (..., slice(height), slice(width))
    if task == "colorize":
        luma = luminance(x)  # (1, H, W), padded

        def keep_luma(out: torch.Tensor) -> torch.Tensor:
            return with_luminance(out, luma[..., : out.shape[-2], : out.shape[-1]])

        return Condition(luminance_scorer(luma.unsqueeze(1)), width, height, 1, keep_luma, keep_luma)
    hole = hole_of(mask, image.size, unit)
    if hole.all():
        msg = "the mask covers the whole image: there is nothing to inpaint from"
        raise InputError(msg)

    def keep_known(out: torch.Tensor) -> torch.Tensor:
        return blend_fill(out, x[crop], hole[crop])

    return Condition(masked_scorer(x, 1 - hole), width, height, finish=keep_known)


def guide_task(
    model: CodecModel,
    task: Task,
    image: Image.Image,
    mask: Image.Image | None = None,
    scale: int = 4,
    pick: Pick = "best",
    seed: int = 0,
    prior_weight: float = PRIOR_WEIGHT,
    keep_condition: bool = True,
    samples: int = 1,
    layers: int | None = None,
) -> Image.Image:
    """Zero-shot conditional generation from a PIL condition (see ``condition``).

    With ``keep_condition`` the result never contradicts the condition: after every layer
    the image is moved towards it (super-resolution: back-projection towards an area
    downsampling equal to the low image; colorisation: the condition's luminance), so finer
    layers build on a consistent image, and the output satisfies it exactly (an inpainting
    keeps the known pixels, its fill shifted to meet them, ``blend_fill``). For
    super-resolution that leaves the later layers nothing to win, since a candidate can
    only move a consistent cell's mean off its low pixel: with the shipped model every cell
    keeps after the first layer (6 ``bsds500/val`` images: the same PSNR to 0.001 dB after
    1, 4, 8 or 26 layers), so the output is the first layer's image back-projected.

    ``samples`` > 1 averages that many walks, each cell taking one of its two best
    candidates at random (seeds ``seed``, ``seed + 1``, …): the mean of the guided samples,
    the least-squares guess where the condition leaves the answer open. ``layers`` stops
    the walks after that many layers (default: all)."""
    if samples < 1:
        msg = f"samples must be at least 1, got {samples}"
        raise OptionError(msg)
    c = condition(model, task, image, mask, scale)
    project = c.project if keep_condition else None
    per_layer = None if project is None else lambda _layer, out: project(out)
    picks = (pick, [seed]) if samples == 1 else ("top2", range(seed, seed + samples))
    walks = [
        guide(model, c.scorer, c.width, c.height, picks[0], s, prior_weight, layers, c.multiple, per_layer)
        for s in picks[1]
    ]
    out = torch.stack(walks).mean(0)
    return to_image(c.finish(out) if keep_condition and c.finish is not None else out)


# ---------------------------------------------------------------- the latent tree


def ring(slots: int) -> list[tuple[int, int]]:
    """Grid positions (column, row) clockwise around the border of the smallest square
    with at least ``slots`` border cells."""
    side = max(3, -(-slots // 4) + 1)
    last = side - 1
    border = (
        [(c, 0) for c in range(last)]
        + [(last, r) for r in range(last)]
        + [(c, last) for c in range(last, 0, -1)]
        + [(0, r) for r in range(last, 0, -1)]
    )
    return border[:slots]


@torch.no_grad()
def tree(model: CodecModel, image: Image.Image, levels: int = 3, thumb: int = 48) -> Image.Image:
    """The latent tree of ``image``, one panel per level as in the paper's figure: the
    chosen node (the reconstruction after that layer) in the centre, its K children (every
    cell taking symbol k) around it, the child chosen in most cells framed in red."""
    levels = min(levels, len(model.config.layers))
    width, height = image.size
    check_size(width, height)
    unit = model.config.unit
    target = from_image(image, unit)
    tile = (thumb, max(1, round(thumb * height / width)))
    children: list[list[Image.Image]] = []
    encode = nearest(target)

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        kids = [options.images(k, k + 1)[:, 0, :, :height, :width] for k in range(options.k)]
        children.append([to_image(kid).resize(tile, Image.BOX) for kid in kids])
        return encode(layer, options)

    panels = []
    for level, (idx, chosen) in enumerate(model.network.walk((1, *target.shape[-2:]), choose, levels)):
        spec = model.config.layers[level]
        slots = ring(spec.k)
        side = max(c for c, _ in slots) + 1
        panel = Image.new("RGB", (side * tile[0], side * tile[1] + 16), "white")
        draw = ImageDraw.Draw(panel)
        draw.text((2, 2), f"level {level + 1}: K={spec.k}, {spec.cell}px cells", fill="black")
        most = int(torch.bincount(idx.flatten(), minlength=spec.k).argmax())
        for k, (col, row) in enumerate(slots):
            box = (col * tile[0], row * tile[1] + 16)
            panel.paste(children[level][k], box)
            if k == most:
                draw.rectangle((*box, box[0] + tile[0] - 1, box[1] + tile[1] - 1), outline="red", width=2)
        inner = ((side - 2) * tile[0], (side - 2) * tile[1])
        centre = ImageOps.contain(to_image(chosen[..., :height, :width]), inner, Image.BOX)
        panel.paste(centre, (tile[0] + (inner[0] - centre.width) // 2, tile[1] + 16 + (inner[1] - centre.height) // 2))
        panels.append(panel)
    figure = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height), "white")
    left = 0
    for panel in panels:
        figure.paste(panel, (left, 0))
        left += panel.width + 8
    return figure
