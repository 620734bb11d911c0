"""Near-duplicate search straight from .ddn files.

A file's signature is a small thumbnail of the coarse image its first SIGNATURE_LAYERS
layers decode to (no post-filter, no finer layer, no detail layer), so only a prefix of
the file is read: its header and those layers' streams. The thumbnail is squeezed to
SIDE x SIDE whatever the image's size and shape, and its brightness and contrast are
normalised away, so a copy at another size, a re-compressed or re-exposed copy, a slight
crop or rotation still lands near the original; a mirror image, a quarter turn or a crop
that moves the subject does not (benchmarks/results/similar.md).

An index keeps the signatures of a library's files by path, size and modification
time: re-indexing reads only new or changed files, and a search reads only those too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddncodec import codec, container, imageio, reading
from ddncodec.atomic import write_atomically
from ddncodec.errors import DDNError, FormatError
from ddncodec.modelfile import CodecModel
from ddncodec.postfilter import to_uint8

SIGNATURE_LAYERS = 3  # the default model's 32 px layers; more cost bytes and time and did not find more
SIDE = 16  # px a side of the thumbnail
HEAD_BYTES = 128  # the first read of a file: the header of a file of up to ~50 layers
INDEX_VERSION = 1  # of the index file and of the signature it holds; another is rebuilt


def read_prefix(path: Path, layers: int = SIGNATURE_LAYERS) -> bytes:
    """The bytes of a .ddn file up to the end of its first ``layers`` layers (all of them
    if it has fewer): the header first, then only as far as those layers need."""
    with path.open("rb") as file:
        reading.require_regular(path)
        data = file.read(HEAD_BYTES)
        try:
            header, start = container.parse_header(data)
        except container.CorruptError:  # a header longer than the first read, or a broken one
            data += file.read(reading.HEADROOM)
            header, start = container.parse_header(data)
        end = start + sum(n + container.LAYER_CRC_BYTES for n in header.lengths[:layers])
        if len(data) < end:
            data += file.read(end - len(data))
        return data[:end]


def coarse(prefix: bytes, model: CodecModel) -> np.ndarray:
    """(H, W, 3) uint8: the image the layers of a .ddn prefix decode to, without the
    post-filter (it sharpens cell borders a thumbnail averages away, and costs 10x the walk)."""
    parsed = container.unpack(prefix)
    header = parsed.header
    if header.fingerprint != model.file_fingerprint(header.detail_filtered):
        msg = f"made with another model (fingerprint {header.fingerprint.hex()})"
        raise FormatError(msg)
    codec.check_padded_pixels(header.width, header.height, model.config.unit, container.DEFAULT_MAX_PIXELS)
    count = min(len(parsed.streams), len(model.config.layers))
    maps = codec.read_maps(parsed, model, count)
    canvas = np.empty((header.height, header.width, 3), dtype=np.uint8)
    with codec.workers(1):
        for i, tile in enumerate(codec.plan(header.width, header.height, model.config.unit)):
            steps = model.network.walk((1, *tile.padded), lambda layer, _: torch.from_numpy(maps[layer][i])[None], count)
            *_, (_, image) = steps
            pixels = to_uint8(image)[0].permute(1, 2, 0).numpy()
            canvas[tile.top : tile.top + tile.height, tile.left : tile.left + tile.width] = pixels[
                : tile.height, : tile.width
            ]
    return canvas


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The signature of (H, W, 3) uint8 pixels: their SIDE x SIDE area average, less its
    mean, at unit length (a dot product of two is their correlation)."""
    small = np.asarray(Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32)
    centred = (small - small.mean()).ravel()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm else centred


def of_ddn(path: Path, model: CodecModel) -> tuple[np.ndarray, int]:
    """A .ddn file's signature and the bytes read for it."""
    prefix = read_prefix(path)
    return thumbnail(coarse(prefix, model)), len(prefix)
