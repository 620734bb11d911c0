"""Near-duplicate search on .ddn files (``ddncodec similar``) against perceptual hashes.

    python benchmarks/similar.py DIR... [--out benchmarks/results/similar.md] [--work DIR] [--model default]

- Every photo of each DIR (the originals) and six near-duplicates of it (JPEG at quality
  50, 10 % brighter, 10 % darker, the centre 90 % scaled back, half size, rotated 3°) are
  encoded with ddncodec at quality 1, on one thread. ``--work`` keeps the files (and the
  encoder's reconstructions, which are exactly what a decode returns) so that a rerun
  skips the encoding.
- The library is every encoded original, indexed as ``ddncodec index`` does it; each
  variant's .ddn file is a query. Recall@1 and @5: the share of queries whose original
  is ranked first, in the first five (ties broken at random, counted as expected).
- Baselines: pHash and dHash (64 bits each) of the full decoded images, ranked by Hamming
  distance.
- Time: a query (its signature, the index read from disk, the ranking) against an index of
  the library, and against an index of 1,000 records (the library's repeated under other
  names; measured, not extrapolated); the signature's cost per library file when indexing.

Run it under ``nice`` on a shared machine; every number is printed and written to the report.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from scipy.fft import dctn

from ddncodec import codec, similar
from ddncodec.data import list_images

QUALITY = 1
TIMED_RECORDS = 1000
TIMED_QUERIES = 20


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    return Image.open(buffer).convert("RGB")


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    box = (round(0.05 * w), round(0.05 * h), round(0.95 * w), round(0.95 * h))
    return image.crop(box).resize(image.size, Image.Resampling.LANCZOS)


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "JPEG q50": _jpeg,
    "+10 % brightness": lambda image: ImageEnhance.Brightness(image).enhance(1.1),
    "-10 % brightness": lambda image: ImageEnhance.Brightness(image).enhance(0.9),
    "90 % centre crop": _crop,
    "half size": lambda image: image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS),
    "rotated 3°": lambda image: image.rotate(3, Image.Resampling.BICUBIC),
}
ORIGINAL = "original"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def encode_all(folders: list[Path], work: Path, model: codec.CodecModel) -> list[dict[str, Path]]:
    """Per original photo, the .ddn file of it and of each variant (``ORIGINAL`` and the
    VARIANTS' names as keys), encoded at QUALITY unless ``work`` holds them already, each
    with its reconstruction beside it (``.png``)."""
    photos = []
    for i, folder in enumerate(folders):
        for path in list_images([folder]):
            photos.append((work / f"{i}_{folder.name}" / path.stem, path))
    done = []
    for n, (place, path) in enumerate(photos, 1):
        files = {name: place / f"{_slug(name)}.ddn" for name in (ORIGINAL, *VARIANTS)}
        todo = [name for name, file in files.items() if not file.with_suffix(".png").exists()]
        if todo:
            place.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as opened:
                original = opened.convert("RGB")
            start = time.perf_counter()
            for name in todo:
                image = original if name == ORIGINAL else VARIANTS[name](original)
                encoded = codec.encode(image, model, quality=QUALITY, threads=1)
                files[name].write_bytes(encoded.data)
                encoded.image().save(files[name].with_suffix(".png"))  # written last: marks the pair done
            print(f"[{n}/{len(photos)}] {path}: {len(todo)} files in {time.perf_counter() - start:.1f} s", flush=True)
        done.append(files)
    return done
