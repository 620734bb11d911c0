"""The codec: image -> tiles -> DDN index maps -> layer streams -> .ddn, and back.

One module per stage, imported one way (each only from those above it):

- ``workers``: the threads tiles, strips and bands run on, and the progress they report
- ``models``: which model codes a file (loaded once, found by fingerprint) and its ladder
- ``choosing``: the encoder's choice per cell, distortion + λ·bits, and ``settle``
- ``tiles``: the image in tiles, the generator walked over them, the post-filter per tile
- ``maps``: ``IndexMaps``, the codec's central value, and its streams
- ``detail_filter``: the detail filter over a whole image in pieces
- ``encoder``: the chain at one rung (walk, streams, filters, detail layer) -> ``Encoded``
- ``rate``: the ``--bpp`` searches
- ``decoder``: file -> index maps -> pixels

This module is the public face: ``encode`` (options checked, a rung or a rate search),
``decode``, and the values and steps the rest of ddncodec builds on.
"""

from __future__ import annotations

import math

from ddncodec import container, imageio, smooth
from ddncodec.codec.choosing import EFFORTS, rate_aware, settle
from ddncodec.codec.decoder import DetailLayer, decode, decode_maps, decode_pixels, read_detail
from ddncodec.codec.detail_filter import expect_work
from ddncodec.codec.encoder import Encoded, encode_maps, encode_pixels
from ddncodec.codec.maps import IndexMaps, layer_parents, read_maps, write_maps
from ddncodec.codec.models import ModelSpec, ladder, load_model, model_for, table_set
from ddncodec.codec.rate import BPP_TOLERANCE, reached, search_bpp
from ddncodec.codec.tiles import TILE, Grids, Tile, cells, plan
from ddncodec.codec.workers import Progress, bands, workers
from ddncodec.errors import OptionError
from ddncodec.ladder import QUALITIES, Rung
from ddncodec.metrics import psnr

DEFAULT_QUALITY = 5

__all__ = [
    "BPP_TOLERANCE",
    "DEFAULT_QUALITY",
    "EFFORTS",
    "TILE",
    "DetailLayer",
    "Encoded",
    "Grids",
    "IndexMaps",
    "ModelSpec",
    "Progress",
    "Rung",
    "Tile",
    "cells",
    "decode",
    "decode_maps",
    "decode_pixels",
    "encode",
    "encode_maps",
    "encode_pixels",
    "ladder",
    "layer_parents",
    "load_model",
    "model_for",
    "plan",
    "psnr",
    "rate_aware",
    "reached",
    "read_detail",
    "read_maps",
    "settle",
    "table_set",
    "workers",
    "write_maps",
]


def _checked_options(count: int, quality: int | None, bpp: float | None, layers: int | None, effort: int) -> None:
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
    _checked_options(count, quality, bpp, layers, effort)
    opened = imageio.open_image(image, max_pixels, model.config.unit)
    pixels, mode = imageio.to_pixels(opened)
    frames = opened.info.get("n_frames", 1)
    del opened  # the pixels are all the encoder reads of it: not a second copy of the photo in memory
    if quality is None and layers is not None:
        rung = Rung(layers, 0.0)
    else:
        rung = ladder(model)[(quality or DEFAULT_QUALITY) - 1]
        rung = Rung(layers or rung.layers, rung.lam, rung.detail)
    imageio.check_padded(pixels.shape[1], pixels.shape[0], model.config.unit, max_pixels, layers=rung.layers)
    with workers(threads, progress):
        if bpp is not None:
            encoded = search_bpp(pixels, mode, model, bpp, layers or count, effort)
        else:
            planes = smooth.whole(pixels, run=bands) if layers is None and not rung.detail else None
            if planes is not None:  # smooth blocks alone (``encoder.code``), found once
                rung = Rung(rung.layers, rung.lam, smooth.PAINTED_STEP)
            detail_filtered = bool(rung.detail) and model.detailfilter is not None
            expect_work(model, pixels.shape[1], pixels.shape[0], 1 + (model.postfilter is not None), detail_filtered)
            encoded = encode_pixels(pixels, mode, model, rung, effort=effort, planes=planes)
    encoded.frames = frames
    return encoded
