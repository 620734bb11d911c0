"""The figure a person can judge: 2x crops of ddncodec at one quality beside WebP and AVIF
at the same file size (each at the largest quality whose file is no bigger than ddncodec's),
and the original, with each file's bytes and its whole-image PSNR.

    python benchmarks/versus_figure.py KODAK_FOLDER --out models/default-versus.png \\
        [--quality 5] [--crop kodim04.png:256,96,128 ...]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ddncodec import codec
from ddncodec.bench.codecs import PILLOW_FORMATS, PillowFormat
from ddncodec.data import load_rgb
from ddncodec.metrics import psnr

# photo: (left, top, size) of a crop that shows what people look at
CROPS = {
    "kodim04.png": (150, 330, 128),  # hair and a face
    "kodim23.png": (330, 40, 128),  # feathers, an eye and a soft background
    "kodim03.png": (20, 20, 128),  # flat colour and an edge
    "kodim08.png": (330, 200, 128),  # fine lines and lettering-like texture
}
ZOOM = 2
LABEL_HEIGHT = 30


@dataclass
class Decoded:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8
    size: int  # bytes of the file
    quality: int


def at_most(codec_format: PillowFormat, image: Image.Image, budget: int) -> Decoded:
    """The codec's decode at the highest integer quality (0-100) whose file fits ``budget``
    bytes (a bisection: file size grows with quality)."""
    low, high, best = 0, 100, None
    while low <= high:
        quality = (low + high) // 2
        data = codec_format.encode(image, quality)
        if len(data) <= budget:
            best, low = (quality, data), quality + 1
        else:
            high = quality - 1
    if best is None:  # even the lowest quality is larger: show it, with its size
        best = (0, codec_format.encode(image, 0))
    quality, data = best
    pixels = np.asarray(codec_format.decode(data).convert("RGB"))
    return Decoded(codec_format.name, pixels, len(data), quality)


def row(photo: Path, box: tuple[int, int, int], quality: int) -> tuple[Image.Image, list[str]]:
    """One row of crops: original, ddncodec, WebP, AVIF; and a line per codec for the report."""
    original = load_rgb(photo)
    image = Image.fromarray(original)
    ours = codec.encode(image, quality=quality, threads=1)
    decoded = [Decoded("ddncodec", ours.pixels, len(ours.data), quality)]
    decoded += [at_most(PILLOW_FORMATS[name], image, len(ours.data)) for name in ("webp", "avif")]
    left, top, size = box
    tile = size * ZOOM
    canvas = Image.new("RGB", (tile * 4, tile + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    panels = [("original", original, "")] + [
        (d.name, d.pixels, f"{d.size:,} B, {psnr(d.pixels, original):.2f} dB") for d in decoded
    ]
    lines = []
    for i, (name, pixels, facts) in enumerate(panels):
        crop = Image.fromarray(pixels[top : top + size, left : left + size]).resize((tile, tile), Image.NEAREST)
        canvas.paste(crop, (i * tile, LABEL_HEIGHT))
        draw.text((i * tile + 4, 2), f"{photo.name} {name}", fill="black")
        draw.text((i * tile + 4, 15), facts, fill="black")
        if facts:
            lines.append(f"| {photo.name} | {name} | {facts} |")
    return canvas, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the Kodak photos")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quality", type=int, default=codec.DEFAULT_QUALITY)
    parser.add_argument("--crop", action="append", help="PHOTO:LEFT,TOP,SIZE (repeatable; default: four Kodak crops)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    crops = CROPS
    if args.crop:
        crops = {name: tuple(int(v) for v in box.split(",")) for name, box in (c.split(":") for c in args.crop)}
    rows, lines = [], []
    for name, box in crops.items():
        canvas, facts = row(args.folder / name, box, args.quality)
        rows.append(canvas)
        lines += facts
    figure = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    for i, canvas in enumerate(rows):
        figure.paste(canvas, (0, sum(r.height for r in rows[:i])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    print(f"ddncodec q{args.quality} against WebP and AVIF at no more bytes (whole-image PSNR):")
    print("| photo | codec | file, PSNR |\n|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
