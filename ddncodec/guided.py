"""Zero-shot conditional generation: any black-box scorer steers the network's walk, with
no gradients and no retraining. Only the chooser of ``DDN.walk`` differs from sampling
(``generate``)::

    guide    per cell, the candidate a scorer likes best         -> an image matching a condition
             (superres: area-downsampled L2, colorize: luminance L2, inpaint: L2 on known pixels),
             each layer's image projected onto the condition before the next layer reads it

A scorer sees whole candidate images, a chunk of the K at a time, and returns a cost
per pixel (lower is better); the chooser pools it per cell. A cell whose scorer cannot
tell its candidates apart (inside an inpainting hole) is decided by its neighbourhood.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from ddncodec import generate, imageio
from ddncodec.errors import InputError, OptionError
from ddncodec.model import Candidates, Chooser, Projection
from ddncodec.modelfile import CodecModel
from ddncodec.priors import Priors

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""Candidate images (B, k, 3, H, W) in [-0.5, 0.5] -> cost per pixel (B, k, H, W), lower is
better. Called on chunks of a layer's K candidates, forward only: any black box will do."""

Transform = Callable[[torch.Tensor], torch.Tensor]
"""An image (B, 3, H, W) -> the image moved towards a condition (see ``Condition``)."""

Pick = Literal["best", "top2"]
Task = Literal["superres", "colorize", "inpaint"]

CHUNK_VALUES = 1 << 25  # floats of candidate images scored at once (128 MB)
PRIOR_WEIGHT = 1e-3  # cost per bit of a symbol's code length; see guided_chooser
NEAR_TIE = 0.05
"""``top2`` draws between a cell's two best candidates only where the second costs at most
this much more (relative): drawing everywhere put noise in every cell, and the mean of four
such walks lost 3.4 dB against bicubic on x4 super-resolution (6 ``bsds500/val`` images);
with the tie rule it is +0.26 dB, as one ``best`` walk."""
EXACT_ROUNDS = 8  # alternations of the exact super-resolution projection and clipping
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L")


# ---------------------------------------------------------------- the guided walk


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
    return generate.run(model, choose, width, height, layers, multiple, project)


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
        generate.check_size(width * scale, height * scale)
        low = generate.from_image(image, math.lcm(unit, scale) // scale)  # padded output: whole low pixels
        per_layer = superres_projection(low, scale, smooth_steps=2, exact=False)
        final = superres_projection(low[..., :height, :width], scale, smooth_steps=10)
        return Condition(superres_scorer(low, scale), width * scale, height * scale, scale, per_layer, final)
    generate.check_size(width, height)
    x = generate.from_image(image, unit)
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
    return generate.to_image(c.finish(out) if keep_condition and c.finish is not None else out)
