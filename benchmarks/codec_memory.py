"""Peak memory of encoding and decoding a 24-megapixel photo (6000x4000), each in a
fresh process so that ru_maxrss is that step's own peak (Linux: KiB).

    python benchmarks/codec_memory.py PHOTO [--model default] [--quality Q] [--out results.json]

PHOTO is resized (bicubic) to 6000x4000 first, so any photo works (e.g. a Kodak image).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = (6000, 4000)


def child(step: str, model: str, quality: int | None, source: Path, target: Path) -> None:
    import ddncodec

    start = time.perf_counter()
    if step == "encode":
        target.write_bytes(ddncodec.encode(source, quality, model=model))
    else:
        ddncodec.decode(source.read_bytes(), model=model).save(target)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step": step, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--quality", type=int, help="1..8 (default: the codec's default)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("STEP", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, source, target = args.child
        child(step, args.model, args.quality, Path(source), Path(target))
        return

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        photo, ddn, png = Path(tmp) / "photo.png", Path(tmp) / "photo.ddn", Path(tmp) / "decoded.png"
        Image.open(args.photo).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(photo)
        rows = []
        for step, source, target in (("encode", photo, ddn), ("decode", ddn, png)):
            command = [sys.executable, __file__, str(args.photo), "--model", args.model]
            command += ["--quality", str(args.quality)] if args.quality else []
            done = subprocess.run(
                [*command, "--child", step, str(source), str(target)], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        report = {
            "image": f"{args.photo.name} resized to {SIZE[0]}x{SIZE[1]}",
            "model": args.model,
            "quality": args.quality,
            "bytes": ddn.stat().st_size,
            "bpp": round(8 * ddn.stat().st_size / (SIZE[0] * SIZE[1]), 4),
            "steps": rows,
        }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
