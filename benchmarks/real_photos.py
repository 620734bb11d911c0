"""ddncodec on photo-sized images: peak memory and seconds per megapixel, from the command line.

    python benchmarks/real_photos.py PHOTO_DIR [--size 6000x4000] [--qualities 1,...,8]
        [--threads-size 4000x3000] [--out benchmarks/results/real_photos.md]

- A mosaic of the photos in PHOTO_DIR (each resized to 1152x768, row by row) stands in for a
  camera photo of ``--size``.
- Every quality: one ``ddncodec encode`` and one ``ddncodec decode`` process on all cores,
  wall seconds (start-up included) and the peak resident memory of that process (``wait4``).
- Threads: the same encode and decode of a ``--threads-size`` mosaic with ``--threads 1`` and
  ``--threads 2``, the speed-ups, and whether bytes and pixels agree.
- A flat gray image of ``--flat-size`` (default 9984x9984: padded, just under the default pixel limit): the few bytes
  it codes to are what a crafted all-"keep" file is, so its decode is the most work a file within
  the limit can ask for.

Run it on an idle machine; every number is printed and written to the report.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from ddncodec.data import list_images

PIECE = (1152, 768)


def mosaic(folder: Path, size: tuple[int, int], out: Path) -> None:
    """A ``size`` image tiled with the photos of ``folder``, each resized to PIECE."""
    photos = list_images([folder])
    canvas = Image.new("RGB", size)
    for i, (top, left) in enumerate((t, x) for t in range(0, size[1], PIECE[1]) for x in range(0, size[0], PIECE[0])):
        with Image.open(photos[i % len(photos)]) as photo:
            canvas.paste(photo.convert("RGB").resize(PIECE, Image.Resampling.LANCZOS), (left, top))
    canvas.save(out)


def run(*args: str) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``ddncodec`` process (it must succeed)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "ddncodec", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        msg = f"ddncodec {' '.join(args)} failed"
        raise RuntimeError(msg)
    return seconds, usage.ru_maxrss / 1024


def qualities(photo: Path, work: Path, levels: list[int], megapixels: float) -> list[dict[str, float]]:
    rows = []
    for quality in levels:
        ddn, png = work / f"q{quality}.ddn", work / f"q{quality}.png"
        encode = run("encode", str(photo), "-o", str(ddn), "-q", str(quality), "-f", "--quiet")
        decode = run("decode", str(ddn), "-o", str(png), "-f", "--quiet")
        row = {
            "quality": quality,
            "bpp": 8 * ddn.stat().st_size / (megapixels * 1e6),
            "encode_s": encode[0],
            "encode_mb": encode[1],
            "decode_s": decode[0],
            "decode_mb": decode[1],
        }
        rows.append(row)
        print(
            f"q{quality}: {row['bpp']:.3f} bpp; encode {encode[0]:.1f} s ({encode[0] / megapixels:.2f} s/MP), "
            f"{encode[1]:.0f} MB; decode {decode[0]:.1f} s ({decode[0] / megapixels:.2f} s/MP), {decode[1]:.0f} MB",
            flush=True,
        )
    return rows


def threads(photo: Path, work: Path) -> dict[str, object]:
    """Seconds of encode and decode at --threads 1 and 2, and whether the outputs agree."""
    seconds, outputs = {}, {}
    for count in (1, 2):
        ddn, png = work / f"t{count}.ddn", work / f"t{count}.png"
        seconds[("encode", count)] = run(
            "encode", str(photo), "-o", str(ddn), "--threads", str(count), "-f", "--quiet"
        )[0]
        seconds[("decode", count)] = run("decode", str(ddn), "-o", str(png), "--threads", str(count), "-f", "--quiet")[
            0
        ]
        outputs[count] = (ddn.read_bytes(), np.asarray(Image.open(png)))
        print(
            f"--threads {count}: encode {seconds[('encode', count)]:.1f} s, decode {seconds[('decode', count)]:.1f} s"
        )
    return {
        "seconds": seconds,
        "bytes_identical": outputs[1][0] == outputs[2][0],
        "pixels_identical": bool(np.array_equal(outputs[1][1], outputs[2][1])),
    }


def flat(size: tuple[int, int], work: Path) -> dict[str, float]:
    """Bytes, and encode and decode seconds and peak MB, of a flat gray image of ``size``."""
    png, ddn, out = work / "flat.png", work / "flat.ddn", work / "flat.out.png"
    Image.new("RGB", size, (128, 128, 128)).save(png)
    encode = run("encode", str(png), "-o", str(ddn), "-f", "--quiet")
    decode = run("decode", str(ddn), "-o", str(out), "-f", "--quiet")
    row = {"bytes": ddn.stat().st_size, "encode_s": encode[0], "encode_mb": encode[1]}
    row |= {"decode_s": decode[0], "decode_mb": decode[1]}
    print(f"flat {size[0]}x{size[1]}: {row}", flush=True)
    return row


def report(
    args: argparse.Namespace, rows: list[dict[str, float]], threaded: dict[str, object], mp: float, plain: dict
) -> str:
    seconds = threaded["seconds"]
    lines = [
        "# ddncodec on photo-sized images",
        "",
        f"A {args.size} mosaic ({mp:.1f} MP) of the photos in `{args.photos}`; "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; {platform.platform()}, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f} at the end. Each figure is one `ddncodec` process on every core "
        "(start-up included); memory is the process's peak resident set. Written by `benchmarks/real_photos.py`.",
        "",
        "| quality | bpp | encode s | encode s/MP | encode peak MB | decode s | decode s/MP | decode peak MB |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['quality']} | {r['bpp']:.3f} | {r['encode_s']:.1f} | {r['encode_s'] / mp:.2f} | "
            f"{r['encode_mb']:.0f} | {r['decode_s']:.1f} | {r['decode_s'] / mp:.2f} | {r['decode_mb']:.0f} |"
            for r in rows
        ),
        "",
        f"## --threads on a {args.threads_size} mosaic (default quality)",
        "",
        "| | --threads 1 | --threads 2 | speed-up |",
        "|---|---|---|---|",
        *(
            f"| {what} | {seconds[(what, 1)]:.1f} s | {seconds[(what, 2)]:.1f} s | "
            f"{seconds[(what, 1)] / seconds[(what, 2)]:.2f}x |"
            for what in ("encode", "decode")
        ),
        "",
        f"Bytes identical: **{threaded['bytes_identical']}**; pixels identical: **{threaded['pixels_identical']}**.",
        "",
        f"## A flat {args.flat_size} image (default quality): the most a file within the pixel limit asks",
        "",
        f"{plain['bytes']:,} bytes. Encode {plain['encode_s']:.1f} s, {plain['encode_mb']:.0f} MB peak; "
        f"decode {plain['decode_s']:.1f} s, {plain['decode_mb']:.0f} MB peak.",
    ]
    return "\n".join(lines) + "\n"


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--size", default="6000x4000")
    parser.add_argument("--threads-size", default="4000x3000")
    parser.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--flat-size", default="9984x9984")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_photos.md"))
    args = parser.parse_args()
    if not list_images([args.photos]):
        parser.error(f"{args.photos}: no images")
    width, height = _size(args.size)
    mp = width * height / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mosaic(args.photos, (width, height), work / "photo.png")
        mosaic(args.photos, _size(args.threads_size), work / "threads.png")
        rows = qualities(work / "photo.png", work, [int(q) for q in args.qualities.split(",")], mp)
        threaded = threads(work / "threads.png", work)
        plain = flat(_size(args.flat_size), work)
    text = report(args, rows, threaded, mp, plain)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
