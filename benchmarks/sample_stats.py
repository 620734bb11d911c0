"""Do ``ddncodec sample`` images look like photos? Two statistics that photos pass:

    python benchmarks/sample_stats.py PHOTO_DIR [--model default] [--count 8] [--out benchmarks/results/samples.md]

- **Spectral slope:** the log-log slope of the radially averaged power spectrum of the
  luminance. Natural photos sit near -2 (1/f² power); white-noise texture sits near 0.
- **Re-encode rate:** the codec's own bits per pixel to encode the image at q5. The model
  was fitted to photos, so what it finds cheap is photo-like; independent noise costs more.

Samples are 256x256, from seeds 0..count-1, for every sampler; the photos are centred
256x256 crops of the first ``count`` images of PHOTO_DIR (e.g. BSDS500 val).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from ddncodec import codec, generate
from ddncodec.data import list_images, load_rgb

SIZE = 256
SAMPLERS = [("context", 1.0), ("context", 0.7), ("learned", 1.0), ("uniform", 1.0)]


def spectral_slope(pixels: np.ndarray) -> float:
    """Slope of log power against log spatial frequency, radially averaged, on the luma."""
    luma = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.float64)
    luma -= luma.mean()
    window = np.outer(np.hanning(luma.shape[0]), np.hanning(luma.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(luma * window))) ** 2
    rows, cols = np.indices(power.shape)
    radius = np.hypot(rows - power.shape[0] // 2, cols - power.shape[1] // 2).astype(int)
    band = np.arange(4, min(power.shape) // 2)  # skip the lowest frequencies (window leakage)
    mean_power = np.array([power[radius == r].mean() for r in band])
    return float(np.polyfit(np.log(band), np.log(mean_power), 1)[0])


def reencode_bpp(model, pixels: np.ndarray) -> float:
    return codec.encode_pixels(pixels, "RGB", model, codec.ladder(model)[4]).bpp


def photos(folder: Path, count: int) -> list[np.ndarray]:
    crops = []
    for path in list_images([folder])[:count]:
        image = load_rgb(path)
        top, left = (image.shape[0] - SIZE) // 2, (image.shape[1] - SIZE) // 2
        crops.append(image[top : top + SIZE, left : left + SIZE])
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, help="folder of photos (not the evaluation sets)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/samples.md"))
    args = parser.parse_args()
    model = codec.load_model(args.model)

    groups: dict[str, list[np.ndarray]] = {"photos": photos(args.photos, args.count)}
    for prior, temperature in SAMPLERS:
        images = generate.sample(model, args.count, SIZE, SIZE, seed=0, prior=prior, temperature=temperature)
        name = f"{prior}, T={temperature:g}" if prior == "context" else prior
        groups[name] = [np.asarray(im) for im in images]

    lines = [
        "# Samples against photos",
        "",
        f"Command: `python benchmarks/sample_stats.py {args.photos} --model {args.model} --count {args.count}`",
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; model fingerprint {model.fingerprint.hex()[:16]}.",
        f"{args.count} images of {SIZE}x{SIZE} per row, mean ± standard deviation.",
        "",
        "| images | spectral slope (photos ≈ -2) | re-encode bpp at q5 |",
        "|---|---|---|",
    ]
    for name, images in groups.items():
        slopes = [spectral_slope(p) for p in images]
        rates = [reencode_bpp(model, p) for p in images]
        row = f"| {name} | {np.mean(slopes):.2f} ± {np.std(slopes):.2f} | {np.mean(rates):.3f} ± {np.std(rates):.3f} |"
        lines.append(row)
        print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
