"""What ddncodec costs from the command line, beyond the per-image seconds ``ddncodec bench`` reports:

    python benchmarks/speed.py IMAGE_DIR [--model default] [--count 8] [--out benchmarks/results/speed.md]

- **Start-up:** the fixed cost of one ``ddncodec encode`` / ``decode`` process (importing
  torch, loading the model), measured on a 16x16 image, whose coding costs next to nothing.
- **Batches:** ``ddncodec encode`` of the first ``count`` images of IMAGE_DIR into a folder with
  ``--jobs 1`` and ``--jobs 2``: wall seconds, the speed-up, and whether the files are
  byte-identical. Run it on an idle machine: the speed-up is what the second core gives.
- **--bpp searches:** in one process, a ``--bpp`` encode against fixed-quality encodes of the same
  image (q5, the default, and the quality whose rate is nearest the target), for targets spread over
  the ladder's range, with the walks each search took.

Every number is printed and written to the report; nothing is estimated.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from ddncodec import codec
from ddncodec.codec import encoder
from ddncodec.data import list_images

TARGETS = (0.1, 0.25, 0.5, 1.0, 2.0)


def _cli(*args: str) -> float:
    """Wall seconds of one ``ddncodec`` process (it must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ddncodec", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def startup(model: str, work: Path) -> dict[str, float]:
    """Median of three runs of each command on a 16x16 image."""
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(work / "tiny.png")
    encode = ["encode", str(work / "tiny.png"), "-o", str(work / "tiny.ddn"), "--model", model, "-f", "--quiet"]
    decode = ["decode", str(work / "tiny.ddn"), "-o", str(work / "tiny.out.png"), "--model", model, "-f", "--quiet"]
    return {
        "encode": float(np.median([_cli(*encode) for _ in range(3)])),
        "decode": float(np.median([_cli(*decode) for _ in range(3)])),
    }


def batches(images: list[Path], model: str, work: Path) -> dict[str, object]:
    """Wall seconds of one batch encode per job count, and whether the outputs agree."""
    seconds, outputs = {}, {}
    for jobs in (1, 2):
        folder = work / f"jobs{jobs}"
        shutil.rmtree(folder, ignore_errors=True)
        seconds[jobs] = _cli(
            "encode", *map(str, images), "-o", f"{folder}/", "--model", model, "--jobs", str(jobs), "--quiet"
        )
        outputs[jobs] = {p.name: p.read_bytes() for p in folder.iterdir()}
    return {"seconds": seconds, "speedup": seconds[1] / seconds[2], "identical": outputs[1] == outputs[2]}


def searches(images: list[Path], model: codec.CodecModel) -> list[dict[str, object]]:
    """Per image and target: seconds of the --bpp encode; of the q5 encode and of the fixed
    encode at the quality whose rate is nearest the target; walks; bpp reached."""
    walks: list[codec.Rung] = []
    code = encoder.code

    def counted(*args: object, **kwargs: object) -> object:  # (pixels, model, rung, ...) as encoder.code takes them
        walks.append(args[2])
        return code(*args, **kwargs)

    rows = []
    encoder.code = counted  # count the search's walks without changing what it does
    try:
        for path in images:
            image = Image.open(path)
            fixed = {}  # quality -> (seconds, bpp)
            for quality in codec.QUALITIES:
                start = time.perf_counter()
                result = codec.encode(image, model, quality)
                fixed[quality] = (time.perf_counter() - start, result.bpp)
            for target in TARGETS:
                walks.clear()
                start = time.perf_counter()
                result = codec.encode(image, model, bpp=target)
                seconds = time.perf_counter() - start
                nearest = min(fixed, key=lambda q: abs(math.log(fixed[q][1] / target)))
                rows.append(
                    {
                        "image": path.name,
                        "target": target,
                        "bpp": result.bpp,
                        "reached": codec.reached(result, target),
                        "seconds": seconds,
                        "q5": fixed[5][0],
                        "nearest": fixed[nearest][0],
                        "walks": len(walks),
                    }
                )
                print(
                    f"{path.name} --bpp {target}: {result.bpp:.4f} bpp in {seconds:.2f} s "
                    f"({seconds / fixed[5][0]:.2f}x q5, {seconds / fixed[nearest][0]:.2f}x q{nearest}), "
                    f"{len(walks)} walks",
                    flush=True,
                )
    finally:
        encoder.code = code
    return rows


def report(model: codec.CodecModel, folder: Path, up: dict, batch: dict, rows: list[dict], count: int) -> str:
    ratio = [r["seconds"] / r["q5"] for r in rows]
    near = [r["seconds"] / r["nearest"] for r in rows]
    lines = [
        "# ddncodec speed: start-up, batches, --bpp searches",
        "",
        f"{count} images of `{folder}`; {datetime.now(timezone.utc).isoformat(timespec='seconds')}; "
        f"{platform.platform()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end. "
        f"Model fingerprint `{model.fingerprint[:8].hex()}`. Written by `benchmarks/speed.py`.",
        "",
        "## Start-up (one process, 16x16 image, median of 3)",
        "",
        "| command | seconds |",
        "|---|---|",
        f"| `ddncodec encode` | {up['encode']:.2f} |",
        f"| `ddncodec decode` | {up['decode']:.2f} |",
        "",
        f"## Batch encode of {count} images",
        "",
        "| --jobs | wall seconds |",
        "|---|---|",
        *(f"| {jobs} | {seconds:.1f} |" for jobs, seconds in batch["seconds"].items()),
        "",
        f"Speed-up with 2 jobs: **{batch['speedup']:.2f}x**; files byte-identical: **{batch['identical']}**.",
        "",
        "## --bpp against fixed-quality encodes of the same image (one process, model loaded)",
        "",
        f"Against q5 (the default): mean **{np.mean(ratio):.2f}x** (worst {max(ratio):.2f}x). Against the "
        f"quality whose rate is nearest the target: mean **{np.mean(near):.2f}x** (worst {max(near):.2f}x). "
        f"Mean walks {np.mean([r['walks'] for r in rows]):.1f}; {sum(r['reached'] for r in rows)} of "
        f"{len(rows)} within the tolerance ({codec.BPP_TOLERANCE:.0%}).",
        "",
        "| target bpp | mean bpp reached | mean seconds | x q5 | x nearest quality | mean walks |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        group = [r for r in rows if r["target"] == target]
        lines.append(
            f"| {target} | {np.mean([r['bpp'] for r in group]):.4f} | {np.mean([r['seconds'] for r in group]):.2f} | "
            f"{np.mean([r['seconds'] / r['q5'] for r in group]):.2f}x | "
            f"{np.mean([r['seconds'] / r['nearest'] for r in group]):.2f}x | {np.mean([r['walks'] for r in group]):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.md"))
    args = parser.parse_args()
    images = list_images([args.images])[: args.count]
    if not images:
        parser.error(f"{args.images}: no images")
    model = codec.load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up = startup(args.model, work)
        print(f"start-up: encode {up['encode']:.2f} s, decode {up['decode']:.2f} s", flush=True)
        batch = batches(images, args.model, work)
        print(f"batch: {batch}", flush=True)
    rows = searches(images, model)
    text = report(model, args.images, up, batch, rows, len(images))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
