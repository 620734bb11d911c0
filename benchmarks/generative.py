"""Measure DDN's zero-shot conditional generation against the classical fill-ins.

    python benchmarks/generative.py DATASET_DIR [--model default] [--out benchmarks/results/generative.md]

For every image of the folder (PSNR-RGB on 8-bit output, mean of per-image values):
  superres  x4 guided super-resolution of the area-downsampled image vs bicubic upsampling
  colorize  guided colorisation of the luminance vs the grayscale input itself
  inpaint   guided fill of a centred (W/4 x H/4) hole vs a blur fill (normalised Gaussian
            convolution of the known pixels), PSNR inside the hole only
"consistency" is how well the raw guided output matches its own condition (downsampled,
known pixels): the scorer's side of the bargain. The 24 Kodak images took 78 minutes
(194 s an image) on a 2-core machine shared with a training run; expect less alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddncodec import generate
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
    """Fill ``hole`` with a Gaussian-weighted mean of the known pixels (sigma: a quarter of
    the hole's shorter side, fixed in advance, not tuned)."""
    rows, cols = np.nonzero(hole)
    sigma = min(np.ptp(rows) + 1, np.ptp(cols) + 1) / 4
    radius = int(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    known = torch.from_numpy(~hole).double()[None, None]
    x = torch.from_numpy(np.array(image)).double().permute(2, 0, 1)[None] * known

    def blur(t: torch.Tensor) -> torch.Tensor:
        c = t.shape[1]
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0)), taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(F.pad(t, (0, 0, radius, radius)), taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    filled = (blur(x) / blur(known).clamp(min=1e-12))[0].permute(1, 2, 0).numpy()
    out = image.copy()
    out[hole] = np.clip(np.round(filled[hole]), 0, 255).astype(np.uint8)
    return out


def measure(model, image: np.ndarray, scale: int, examples: Path | None) -> dict[str, float]:
    height, width = (n - n % scale for n in image.shape[:2])
    truth = image[:height, :width]
    full = Image.fromarray(truth)
    row: dict[str, float] = {}

    low = full.reduce(scale)
    sr = generate.guide_task(model, "superres", low, scale=scale)
    row["sr_ddn"] = psnr(np.asarray(sr), truth)
    row["sr_bicubic"] = psnr(np.asarray(low.resize(full.size, Image.BICUBIC)), truth)
    row["sr_consistency"] = psnr(np.asarray(sr.reduce(scale)), np.asarray(low))

    gray = full.convert("L")
    color = generate.guide_task(model, "colorize", gray)
    row["col_ddn"] = psnr(np.asarray(color), truth)
    row["col_gray"] = psnr(np.asarray(gray.convert("RGB")), truth)

    mask = centred_hole(width, height)
    hole = np.asarray(mask) >= 128
    filled = generate.guide_task(model, "inpaint", full, mask, keep_condition=False)  # the hole is the same
    row["inp_ddn"] = psnr(np.asarray(filled), truth, hole)
    row["inp_blur"] = psnr(blur_fill(truth, hole), truth, hole)
    row["inp_consistency"] = psnr(np.asarray(filled), truth, ~hole)

    if examples is not None:
        examples.mkdir(parents=True, exist_ok=True)
        for name, im in {"superres": sr, "colorize": color, "inpaint": filled}.items():
            generate.save(im, examples / f"{name}.png")
        generate.save(generate.tree(model, full), examples / "tree.png")
    return row


COLUMNS = [
    ("sr_ddn", "SR x{scale} DDN"),
    ("sr_bicubic", "SR bicubic"),
    ("sr_consistency", "SR consist."),
    ("col_ddn", "color DDN"),
    ("col_gray", "color gray input"),
    ("inp_ddn", "inpaint DDN (hole)"),
    ("inp_blur", "inpaint blur (hole)"),
    ("inp_consistency", "inpaint consist. (known)"),
]


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace, model, seconds: float) -> str:
    heads = [title.format(scale=args.scale) for _, title in COLUMNS]
    means = {key: float(np.mean([r[key] for r in rows.values()])) for key, _ in COLUMNS}
    card = model.card
    lines = [
        "# Zero-shot conditional generation (guided DDN, no gradients, no retraining)",
        "",
        f"Command: `python benchmarks/generative.py {args.dataset} --model {args.model} --scale {args.scale}`",
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {len(rows)} images, {seconds:.0f} s in all "
        f"({seconds / len(rows):.1f} s per image for the three tasks; torch threads: {torch.get_num_threads()}).",
        "",
        f"Model `{args.model}`: fingerprint {model.fingerprint.hex()[:16]}, {len(model.config.layers)} layers, "
        f"card: steps {card.get('steps', '?')}, data {card.get('data', '?')}.",
        "",
        "PSNR-RGB in dB on 8-bit output, mean of per-image values. Super-resolution: the ground truth is",
        f"area-downsampled x{args.scale} (Pillow `reduce`), the DDN scorer compares each candidate's area-downsampled",
        "image with it. Colorisation: the scorer compares luminance (ITU-R 601) only; the output keeps the",
        "condition's luminance and takes DDN's chroma (as `ddncodec guide` does). Inpainting: a centred",
        "W/4 x H/4 hole; the DDN scorer sees the known pixels only, the blur fill is a normalised Gaussian",
        "convolution (sigma = hole's shorter side / 4); PSNR is measured inside the hole.",
        '"consist." is the raw guided output against its own condition (downsampled / known pixels).',
        f"Every guided choice also pays {generate.PRIOR_WEIGHT:g} per bit of its symbol under the model's priors.",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
        "| **mean** | " + " | ".join(f"**{means[key]:.2f}**" for key, _ in COLUMNS) + " |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{r[key]:.2f}" for key, _ in COLUMNS) + " |" for name, r in rows.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder of images, e.g. the Kodak set")
    parser.add_argument("--model", default="default", help="model name or path")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generative.md"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--limit", type=int, help="only the first N images (a quick look)")
    parser.add_argument("--examples", type=Path, help="also write the first image's outputs and tree here")
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
        rows[path.stem] = measure(model, load_rgb(path), args.scale, args.examples if i == 0 else None)
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
