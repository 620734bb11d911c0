"""Flat colour and smooth ramps: bytes and largest error per size, colour and quality.

    python benchmarks/flat.py [--out benchmarks/results/flat.md] [--model default]

Each image is encoded and decoded through the public API (one process, every core); the
error is the largest absolute difference of any channel of any pixel, in 8-bit levels.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

import ddncodec
from ddncodec import codec

QUALITIES = (1, 5, 8)


def flat(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = colour
    return pixels


def ramp(width: int, height: int, across: bool) -> np.ndarray:
    """A gray ramp from 0 to 255 across (or down) the image."""
    length = width if across else height
    line = np.linspace(0, 255, length).round().astype(np.uint8)
    grid = np.broadcast_to(line[None, :] if across else line[:, None], (height, width))
    return np.repeat(grid[..., None], 3, 2).copy()


CASES = {
    "flat 1x1 (200, 30, 40)": flat(1, 1, (200, 30, 40)),
    "flat 256x256 (200, 30, 40)": flat(256, 256, (200, 30, 40)),
    "flat 500x500 (200, 30, 40)": flat(500, 500, (200, 30, 40)),
    "flat 1023x77 (12, 200, 99)": flat(1023, 77, (12, 200, 99)),
    "flat 2000x1500 white": flat(2000, 1500, (255, 255, 255)),
    "flat 6000x4000 (30, 60, 200)": flat(6000, 4000, (30, 60, 200)),
    "gray ramp 512x256 across": ramp(512, 256, True),
    "gray ramp 256x512 down": ramp(256, 512, False),
    "gray ramp 1024x64 across (4 levels per 16 px)": ramp(1024, 64, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flat.md"))
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    model = codec.load_model(args.model)
    rows = []
    for name, pixels in CASES.items():
        for quality in QUALITIES:
            start = time.perf_counter()
            data = ddncodec.encode(Image.fromarray(pixels), quality=quality, model=model)
            decoded = np.asarray(ddncodec.decode(data, model=model).convert("RGB"))
            seconds = time.perf_counter() - start
            error = int(np.abs(decoded.astype(int) - pixels).max())
            rows.append(f"| {name} | q{quality} | {len(data):,} | {error} | {seconds:.2f} |")
            print(rows[-1], flush=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# Flat colour and smooth ramps",
        "",
        f"{now}; {platform.platform()}; model fingerprint `{model.fingerprint.hex()[:16]}`. Written by "
        "`benchmarks/flat.py`: bytes of the whole file, the largest error of any channel of any pixel "
        "(8-bit levels), and the seconds of one encode and decode through the Python API (model loaded once, "
        "every core).",
        "",
        "| image | quality | bytes | largest error | seconds |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
