"""Measure DDN's zero-shot conditional generation against the classical fill-ins.

    python benchmarks/generative.py DATASET_DIR [--model default] [--out benchmarks/results/generative.md]

For every image of the folder (PSNR-RGB on 8-bit output, mean of per-image values):
  superres  x4 guided super-resolution of the area-downsampled image vs bicubic upsampling
  colorize  guided colorisation of the luminance vs the grayscale input itself
  inpaint   guided fill of a centred (W/4 x H/4) hole vs a blur fill (normalised Gaussian
            convolution of the known pixels), PSNR inside the hole only
Every DDN output keeps its condition (see ``guided.guide_task``); "consistency" is the
super-resolved image downsampled against its input. MS-SSIM is reported beside PSNR.
``--figure`` writes input / baseline / DDN / truth crops of the first image.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddncodec import generate, guided
from ddncodec.bench.metrics import ms_ssim
from ddncodec.data import list_images, load_rgb
from ddncodec.modelfile import load


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR (dB) of two 8-bit arrays, over the pixels ``where`` (H, W) is true if given."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where]
    return float(10 * np.log10(255**2 / max(np.mean(diff**2), 1e-10)))


def centred_hole(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    w, h = width // 4, height // 4
    mask.paste(255, ((width - w) // 2, (height - h) // 2, (width + w) // 2, (height + h) // 2))
    return mask


def blur_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The hole filled with a Gaussian-weighted mean of the known pixels (sigma: a quarter
    of the hole's shorter side, fixed in advance, not tuned)."""
    x = generate.from_image(Image.fromarray(image))
    hole_t = torch.from_numpy(hole).float()[None, None]
    filled = guided.spread_into(x, 1 - hole_t, guided.hole_sigma(hole_t))
    return np.asarray(generate.to_image(torch.where(hole_t.bool(), filled, x)))


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    value = ms_ssim(a, b)
    return float("nan") if value is None else value


def measure(model, image: np.ndarray, scale: int, samples: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every task's measures on one image, and the images themselves (for the figure)."""
    height, width = (n - n % scale for n in image.shape[:2])
    truth = image[:height, :width]
    full = Image.fromarray(truth)
    row: dict[str, float] = {}
    out: dict[str, np.ndarray] = {"truth": truth}

    low = full.reduce(scale)
    sr = np.asarray(guided.guide_task(model, "superres", low, scale=scale, samples=samples))
    bicubic = np.asarray(low.resize(full.size, Image.BICUBIC))
    row |= {"sr_ddn": psnr(sr, truth), "sr_bicubic": psnr(bicubic, truth)}
    row |= {"sr_ddn_ms": msssim(sr, truth), "sr_bicubic_ms": msssim(bicubic, truth)}
    row["sr_consistency"] = psnr(np.asarray(Image.fromarray(sr).reduce(scale)), np.asarray(low))
    first = np.asarray(guided.guide_task(model, "superres", low, scale=scale, samples=samples, layers=1))
    row["sr_first_layer"] = psnr(first, truth)  # what the layers after the first add: the gap to sr_ddn
    out |= {"sr_input": np.asarray(low.resize(full.size, Image.NEAREST)), "sr_baseline": bicubic, "sr_ddn": sr}

    gray = full.convert("L")
    color = np.asarray(guided.guide_task(model, "colorize", gray, samples=samples))
    gray_rgb = np.asarray(gray.convert("RGB"))
    row |= {"col_ddn": psnr(color, truth), "col_gray": psnr(gray_rgb, truth)}
    row |= {"col_ddn_ms": msssim(color, truth), "col_gray_ms": msssim(gray_rgb, truth)}
    out |= {"col_input": gray_rgb, "col_baseline": gray_rgb, "col_ddn": color}

    mask = centred_hole(width, height)
    hole = np.asarray(mask) >= 128
    filled = np.asarray(guided.guide_task(model, "inpaint", full, mask, samples=samples))
    blurred = blur_fill(truth, hole)
    row |= {"inp_ddn": psnr(filled, truth, hole), "inp_blur": psnr(blurred, truth, hole)}
    row |= {"inp_ddn_ms": msssim(filled, truth), "inp_blur_ms": msssim(blurred, truth)}
    holed = truth.copy()
    holed[hole] = 255
    out |= {"inp_input": holed, "inp_baseline": blurred, "inp_ddn": filled}
    return row, out


COLUMNS = [
    ("sr_ddn", "SR x{scale} DDN"),
    ("sr_bicubic", "SR bicubic"),
    ("sr_consistency", "SR consist."),
    ("sr_first_layer", "SR layer 1 only"),
    ("col_ddn", "color DDN"),
    ("col_gray", "color gray input"),
    ("inp_ddn", "inpaint DDN (hole)"),
    ("inp_blur", "inpaint blur (hole)"),
]
MS_COLUMNS = [
    ("sr_ddn_ms", "SR DDN"),
    ("sr_bicubic_ms", "SR bicubic"),
    ("col_ddn_ms", "color DDN"),
    ("col_gray_ms", "color gray"),
    ("inp_ddn_ms", "inpaint DDN"),
    ("inp_blur_ms", "inpaint blur"),
]


def figure(images: dict[str, np.ndarray], box: tuple[int, int, int], path: Path) -> None:
    """Rows superres / colorize / inpaint, columns input / baseline / DDN / truth: the
    ``box`` (left, top, side) of each, 2x enlarged."""
    left, top, side = box
    tiles = []
    for task in ("sr", "col", "inp"):
        for kind in ("input", "baseline", "ddn"):
            tiles.append(images[f"{task}_{kind}"])
        tiles.append(images["truth"])
    zoom = 2 * side
    canvas = Image.new("RGB", (4 * zoom + 3 * 4, 3 * zoom + 2 * 4), "white")
    for i, tile in enumerate(tiles):
        crop = Image.fromarray(tile[top : top + side, left : left + side]).resize((zoom, zoom), Image.NEAREST)
        canvas.paste(crop, ((i % 4) * (zoom + 4), (i // 4) * (zoom + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace, model, seconds: float) -> str:
    heads = [title.format(scale=args.scale) for _, title in COLUMNS]
    means = {key: float(np.nanmean([r[key] for r in rows.values()])) for key, _ in COLUMNS + MS_COLUMNS}
    card = model.card
    lines = [
        "# Zero-shot conditional generation (guided DDN, no gradients, no retraining)",
        "",
        f"Command: `python benchmarks/generative.py {args.dataset} --model {args.model} --scale {args.scale}"
        f" --samples {args.samples}`",
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {len(rows)} images, {seconds:.0f} s in all "
        f"({seconds / len(rows):.1f} s per image for the three tasks; torch threads: {torch.get_num_threads()}).",
        "",
        f"Model `{args.model}`: fingerprint {model.fingerprint.hex()[:16]}, {len(model.config.layers)} layers, "
        f"card: steps {card.get('steps', '?')}.",
        "",
        "PSNR-RGB in dB on 8-bit output, mean of per-image values. Every DDN output keeps its condition",
        "(`ddncodec guide`'s default): super-resolution back-projects after every layer and ends with an",
        "exact projection (its area downsampling is the input); colorisation keeps the input's luminance",
        "after every layer; inpainting keeps the known pixels and shifts its fill to meet them.",
        f"Super-resolution: the ground truth area-downsampled x{args.scale} (Pillow `reduce`). Inpainting: a",
        "centred W/4 x H/4 hole; the blur fill is a normalised Gaussian convolution (sigma = the hole's",
        'shorter side / 4); PSNR inside the hole only. "SR consist." is the DDN output downsampled',
        'against its input; "SR layer 1 only" the same guided walk stopped after its first layer (then',
        "projected the same way): what the other layers add is the gap between it and the DDN column.",
        f"Every guided choice also pays {guided.PRIOR_WEIGHT:g} per bit of its symbol under the model's priors.",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
        "| **mean** | " + " | ".join(f"**{means[key]:.2f}**" for key, _ in COLUMNS) + " |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{r[key]:.2f}" for key, _ in COLUMNS) + " |" for name, r in rows.items()]
    lines += [
        "",
        "MS-SSIM (pytorch-msssim, whole image; for inpainting only the hole differs), mean of per-image values:",
        "",
        "| " + " | ".join(title for _, title in MS_COLUMNS) + " |",
        "|" + "---|" * len(MS_COLUMNS),
        "| " + " | ".join(f"{means[key]:.4f}" for key, _ in MS_COLUMNS) + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder of images, e.g. the Kodak set")
    parser.add_argument("--model", default="default", help="model name or path")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generative.md"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--limit", type=int, help="only the first N images (a quick look)")
    parser.add_argument("--samples", type=int, default=1, help="guided walks averaged per output")
    parser.add_argument("--figure", type=Path, help="also write input/baseline/DDN/truth crops of the first image")
    parser.add_argument("--box", default="280,180,128", help="the figure's crop: left,top,side")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.model)
    files = list_images([args.dataset])[: args.limit]
    rows: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    for i, path in enumerate(files):
        tick = time.perf_counter()
        rows[path.stem], images = measure(model, load_rgb(path), args.scale, args.samples)
        if i == 0 and args.figure is not None:
            figure(images, tuple(int(v) for v in args.box.split(",")), args.figure)
        r = rows[path.stem]
        print(
            f"{path.stem}: SR {r['sr_ddn']:.2f} (bicubic {r['sr_bicubic']:.2f}), color {r['col_ddn']:.2f} "
            f"(gray {r['col_gray']:.2f}), inpaint {r['inp_ddn']:.2f} (blur {r['inp_blur']:.2f}), "
            f"{time.perf_counter() - tick:.1f} s",
            file=sys.stderr,
        )
    text = report(rows, args, model, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
