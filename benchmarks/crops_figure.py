"""The model card's before/after figure: 2x-zoomed crops of one photo at a few
qualities, decoded without and with the filters (the post-filter and, after the detail
layer, the detail filter), beside the original.

    python benchmarks/crops_figure.py PHOTO --out models/default-crops.png [--model default]
        [--box LEFT,TOP,SIZE] [--qualities 3,5,7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ddncodec import codec
from ddncodec.data import load_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--box", default="200,150,128", help="left,top,size of the crop in px")
    parser.add_argument("--qualities", default="3,5,7")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = codec.load_model(args.model)
    if model.postfilter is None:
        parser.error("the model has no post-filter")
    plain = model.replace(postfilter=None, detailfilter=None)
    left, top, size = (int(v) for v in args.box.split(","))
    pixels = load_rgb(args.photo)
    zoom = 2
    tile = size * zoom
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    for q in qualities:
        rung = codec.ladder(model)[q - 1]
        filtered = codec.encode_pixels(pixels, "RGB", model, rung)
        unfiltered = codec.encode_pixels(pixels, "RGB", plain, rung)
        label = f"q{q}: {filtered.bpp:.3f} bpp"
        cells = [
            (unfiltered.pixels, f"{label}, no filter, {unfiltered.psnr:.2f} dB"),
            (filtered.pixels, f"{label}, filters, {filtered.psnr:.2f} dB"),
            (pixels, "original"),
        ]
        rows.append(cells)
    canvas = Image.new("RGB", (3 * tile + 4 * 8, len(rows) * (tile + 24) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for r, cells in enumerate(rows):
        y = 8 + r * (tile + 24)
        for c, (image, text) in enumerate(cells):
            crop = np.ascontiguousarray(image[top : top + size, left : left + size])
            x = 8 + c * (tile + 8)
            canvas.paste(Image.fromarray(crop).resize((tile, tile), Image.Resampling.NEAREST), (x, y + 16))
            draw.text((x, y + 2), text, fill="black")
    canvas.save(args.out)
    print(f"{args.out}: {canvas.width}x{canvas.height}")


if __name__ == "__main__":
    main()
