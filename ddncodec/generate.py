"""DDN's own gift: the network that compresses also samples. Every generator walks
``DDN.walk`` with a chooser, which picks one of K candidates per cell, layer by layer:

    sample   per cell, a symbol drawn from the context model     -> a new image
             (the decoder's adaptive odds, so neighbouring cells cohere; or independently)

This module holds the walk every generator shares (``run``, on a size within the limits),
the image conversions and file I/O of generated images, and the samplers. Steering the
walk with a scorer (zero-shot conditional generation): ``guided``; the latent-tree
figure: ``figures``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ddncodec import codec, imageio
from ddncodec.atomic import write_atomically
from ddncodec.context import HalfRow, code_layer, parent_grid
from ddncodec.data import to_tensor
from ddncodec.errors import OptionError
from ddncodec.ladder import Rung
from ddncodec.model import Candidates, Chooser, Projection
from ddncodec.modelfile import CodecModel

Prior = Literal["context", "learned", "uniform"]

MAX_SIDE = 8192  # px; a guard against sizes that would only exhaust memory
MAX_GENERATED_PIXELS = 1 << 24


# ---------------------------------------------------------------- samplers


def context_chooser(model: CodecModel, generator: torch.Generator, temperature: float = 1.0) -> Chooser:
    """Per layer, an index map drawn cell by cell from the context model's adaptive odds:
    the decoder's walk (``context.code_layer``) with a random draw in place of the
    arithmetic decoder. A symbol's odds rise with its neighbours' use of it and with the
    layer before keeping, so symbols come in coherent patches, as in a photo's maps.
    Odds are raised to 1/``temperature`` (< 1: the likelier symbols, > 1: flatter), from
    the table set of the model's plain-nearest top rung (what photos' maps look like)."""
    specs = model.config.layers
    tables = codec.table_set(model, Rung(len(specs), 0.0))
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


# ---------------------------------------------------------------- images in and out


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


def save(image: Image.Image, path: Path) -> None:
    """Write ``image`` in the format its suffix names, atomically (temp file + rename), so a
    failure never leaves a half-written file."""
    fmt = imageio.output_format(path)
    write_atomically(path, lambda tmp: image.save(tmp, format=fmt))
