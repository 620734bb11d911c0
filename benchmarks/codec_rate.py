"""Rate checks of the codec on a folder of images (report on Kodak; never tune on it):

- every quality 1..8: whole-file bpp and PSNR, per image and mean; monotone?
- code length of the layer streams against the ideal −Σ log2 p of their symbols;
- --bpp targets: the bpp reached, and whether it is within 10 %.

    python benchmarks/codec_rate.py DATASET_DIR [--model default] [--targets 0.05,0.1,0.2] [--limit N] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ddncodec import codec, container, entropy
from ddncodec.data import list_images


def ideal_bits(data: bytes, model: codec.CodecModel) -> float:
    """−Σ log2 p of the symbols in a file's layer streams, under the adaptive model."""
    parsed = container.unpack(data)
    maps = codec.read_maps(parsed, model)
    total = 0.0
    for layer, grids in enumerate(maps.grids):
        parents = codec.layer_parents(model.config, maps.grids, layer, [g.shape for g in grids])
        total += entropy.ideal_bits(grids, parents, model.priors.initial(layer, parsed.header.table_set))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--targets", default="0.05,0.1,0.2")
    parser.add_argument("--limit", type=int, help="Only the first N images.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = codec.load_model(args.model)
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    for path in list_images([args.dataset])[: args.limit]:
        row: dict = {"image": path.name, "quality": [], "targets": []}
        for quality in codec.QUALITIES:
            start = time.perf_counter()
            result = codec.encode(path, model, quality)
            seconds = time.perf_counter() - start
            coded = 8 * sum(container.unpack(result.data).header.lengths)
            ideal = ideal_bits(result.data, model)
            row["quality"].append(
                {
                    "q": quality,
                    "bpp": round(result.bpp, 5),
                    "psnr": round(result.psnr, 3),
                    "excess_over_ideal_percent": round(100 * (coded / ideal - 1), 3),
                    "encode_s": round(seconds, 2),
                }
            )
        for target in targets:
            result = codec.encode(path, model, bpp=target)
            hit = abs(result.bpp / target - 1) <= 0.1
            row["targets"].append({"target": target, "bpp": round(result.bpp, 5), "within_10_percent": hit})
        bpps = [q["bpp"] for q in row["quality"]]
        psnrs = [q["psnr"] for q in row["quality"]]
        row["monotone"] = bool(np.all(np.diff(bpps) > 0) and np.all(np.diff(psnrs) > 0))
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "images": len(rows),
        "model": args.model,
        "mean_bpp": [round(float(np.mean([r["quality"][q]["bpp"] for r in rows])), 4) for q in range(8)],
        "mean_psnr": [round(float(np.mean([r["quality"][q]["psnr"] for r in rows])), 3) for q in range(8)],
        "monotone_images": sum(r["monotone"] for r in rows),
        "max_excess_over_ideal_percent": max(q["excess_over_ideal_percent"] for r in rows for q in r["quality"]),
        "targets_within_10_percent": f"{sum(t['within_10_percent'] for r in rows for t in r['targets'])}"
        f" of {sum(len(r['targets']) for r in rows)}",
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
