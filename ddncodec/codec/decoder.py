"""Decoding: a file's streams -> index maps -> the walk replayed -> filters and detail -> pixels.

The decoder replays the stored indices through the same generator: it never takes an
argmin, so float drift cannot desynchronise it. The layer streams are decoded before the
network runs, so a corrupt one costs no network time; the detail stream is decoded band
by band as it is added (format version 5 on), so its levels never sit in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ddncodec import colour, container, detail, entropy, imageio, levels, smooth
from ddncodec.codec import workers
from ddncodec.codec.detail_filter import detail_filtered, expect_work
from ddncodec.codec.maps import IndexMaps, read_maps
from ddncodec.codec.models import ModelSpec, model_for
from ddncodec.codec.tiles import Filtering, walk
from ddncodec.codec.workers import Progress
from ddncodec.errors import FormatError, OptionError
from ddncodec.model import Chooser
from ddncodec.modelfile import CodecModel


@dataclass
class DetailLayer:
    """What a detail stream holds: the smooth blocks (version 6 on; else none) and the levels."""

    planes: smooth.Planes
    levels: np.ndarray  # (3, rows, cols, 64)


def read_detail(parsed: container.Container) -> DetailLayer | None:
    """The detail layer of a parsed file, in its version's layout; None if it has none."""
    if parsed.detail is None:
        return None
    planes, bands = _detail_bands(parsed)
    whole = np.zeros((3, *planes.smooth.shape, levels.BLOCK**2), dtype=levels.LEVEL)
    for band, band_levels in bands:
        whole[:, band] = band_levels
    return DetailLayer(planes, whole)


DETAIL_AHEAD = 128 << 20
"""Bytes of detail levels a decoder on several workers decodes during the walk, on one of
them (``workers.ahead``): a 12-megapixel photo's 72 MB all, 128 of a 24-megapixel one's 144 MB."""


def _detail_bands(parsed: container.Container) -> tuple[smooth.Planes, Iterator[tuple[slice, np.ndarray]]]:
    """The smooth blocks of a file's detail stream (version 6 on; else none), and its
    levels band by band of detail.BAND_ROWS block rows, decoded as they are drawn (bands
    of smooth blocks alone, which hold no levels, left out)."""
    header = parsed.header
    assert parsed.detail is not None
    rows, cols = detail.blocks(header.height, header.width)
    decoder = entropy.Decoder(parsed.detail, "detail stream")
    planes = smooth.read(decoder, rows, cols) if header.smooth_blocks else smooth.Planes.none(rows, cols)
    if header.legacy_detail:
        return planes, _channel_by_channel(decoder, header)
    layout = levels.Layout.SUMMARISED if header.summarised else levels.Layout.ROWS
    if header.dc_signs:
        layout = levels.Layout.DC_SIGNS
    bands = levels.read_bands(
        decoder, header.height, header.width, detail.BAND_ROWS, header.detail_step, planes.smooth, layout
    )
    return planes, bands


def _channel_by_channel(decoder: entropy.Decoder, header: container.Header) -> Iterator[tuple[slice, np.ndarray]]:
    """Versions 3 and 4 code channel by channel, so every level is decoded at the first band."""
    whole = levels.read(decoder, header.height, header.width, header.detail_step, levels.Layout.CHANNELS)
    for top in range(0, whole.shape[1], detail.BAND_ROWS):
        band = slice(top, top + detail.BAND_ROWS)
        yield band, whole[:, band]


def _add_detail(
    pixels: np.ndarray,
    header: container.Header,
    model: CodecModel,
    planes: smooth.Planes,
    bands: Iterator[tuple[slice, np.ndarray]],
) -> np.ndarray:
    """``pixels`` with a file's detail layer: the levels of ``bands`` added band by band as
    they come (from version 9 on, a band once the next one is there: its low frequencies
    are predicted from the DCs around it), then the detail filter where the file runs it,
    then its colour correction, then the smooth blocks of ``planes`` painted."""
    coded = np.zeros(planes.smooth.shape, dtype=bool)
    step = header.detail_step
    dc_levels = np.zeros((3, *planes.smooth.shape), dtype=levels.LEVEL) if header.predicted else None

    def add(item: tuple[slice, np.ndarray]) -> None:
        band, band_levels = item
        coded[band] = detail.coded_blocks(band_levels)
        prediction = None if dc_levels is None else detail.band_surface(dc_levels, step, band, planes.smooth)
        detail.add_band(pixels, band_levels, band, step, pixels, prediction)

    workers.overlapped(add, bands if dc_levels is None else _with_dcs(bands, dc_levels))
    if header.detail_filtered:
        pixels = detail_filtered(model, pixels, coded, step)
    _correct(pixels, header.colour)
    smooth.paint(pixels, planes)
    return pixels


def _correct(pixels: np.ndarray, correction: bytes) -> None:
    """Put ``pixels`` through a colour correction of the header, if it has it (format versions 10 and 11)."""
    if correction:
        colour.Correction.from_bytes(correction).apply(pixels, run=workers.bands)


def _with_dcs(bands: Iterator[tuple[slice, np.ndarray]], dc_levels: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """``bands`` one behind, each once ``dc_levels`` holds the DCs of the block rows around it."""
    held = None
    for band, band_levels in bands:
        dc_levels[:, band] = band_levels[..., 0]
        if held is not None:
            yield held
        held = band, band_levels
    if held is not None:
        yield held


def decode_maps(maps: IndexMaps, model: CodecModel, post_filter: bool = False) -> np.ndarray:
    """The (H, W, 3) uint8 image the generator walks to along ``maps``, through the
    model's post-filter if ``post_filter``."""
    tiles = maps.tiles(model)

    def chooser_for(i: int) -> Chooser:
        return lambda layer, _options: torch.from_numpy(maps.grids[layer][i].astype(np.int64))[None]

    filtering = Filtering.NOW if post_filter else Filtering.NONE
    return walk(model, tiles, maps.layers, chooser_for, filtering).image


def _checked_model(header: container.Header, spec: ModelSpec) -> CodecModel:
    """The model that made the file, once the header's claims about it hold."""
    model = model_for(header, spec)
    if header.layers > len(model.config.layers):
        msg = f"corrupt .ddn header: {header.layers} layers, the model has {len(model.config.layers)}"
        raise FormatError(msg)
    if header.filtered and model.postfilter is None:
        msg = "corrupt .ddn header: the post-filter flag is set, and the model has no post-filter"
        raise FormatError(msg)
    if header.detail_filtered and model.detailfilter is None:
        msg = "corrupt .ddn header: the file runs the detail filter, and the model has none"
        raise FormatError(msg)
    return model


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
    model = _checked_model(header, "default" if model is None else model)
    present = len(parsed.streams)
    if layers is not None and not 1 <= layers <= present:
        msg = f"layers must be 1..{present} for this file, got {layers}"
        if not present:
            msg = "this file has no layers to cut at: it is smooth blocks alone (format version 7)"
        raise OptionError(msg)
    count = present if layers is None else layers
    imageio.check_padded(header.width, header.height, model.config.unit, max_pixels, layers=count)
    maps = read_maps(parsed, model, count)
    with_detail = count == header.layers and parsed.detail is not None
    with workers.workers(threads, progress):
        expect_work(model, header.width, header.height, 1, with_detail and header.detail_filtered)
        if with_detail:
            planes, bands = _detail_bands(parsed)
            bands = workers.ahead(bands, DETAIL_AHEAD, lambda item: item[1].nbytes)
        pixels = decode_maps(maps, model, header.filtered)
        if with_detail:
            _correct(pixels, header.walk_colour)
            pixels = _add_detail(pixels, header, model, planes, bands)
        elif count == header.layers and not header.detail_step:  # the whole file: its correction too
            _correct(pixels, header.colour)
    return pixels, header.mode
