"""Batch throughput of ``ddncodec.batch`` (what ``ddncodec encode DIR -o OUT/ --engine ...``
runs), per engine and worker count, and what the driver costs per file:

    python benchmarks/batch.py IMAGE_DIR [--count 6] [--quality 1] [--model default] [--out benchmarks/results/batch.md]

The first ``count`` images of IMAGE_DIR, listed in an ``@list`` file, are encoded by the
local engine (1 and 2 forked processes) and by a Ray started here once (1 and 2 actors).
Per configuration:

- **start:** a batch of one image per worker: its wall seconds less its coding seconds per
  worker (Ray: the actors made, the model shipped to each; local: the processes forked, the
  model loaded once up front);
- **wall, files/s, MB/s:** the ``count``-image batch, from the call to its return;
- **coding:** the workers' own seconds, summed from the manifest;
- **overhead per file:** (wall − coding / workers) / files: the wall time per file not spent
  coding on a worker (the start's share, reading, shipping, writing, the manifest, waiting);
- **driver CPU per file:** this process's CPU seconds over the batch, per file (not for the
  local engine with 1 process, which codes in the driver).

Every configuration's files are compared byte for byte with the local engine's on 1
process. Every number is measured; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ddncodec import batch, codec
from ddncodec.data import list_images

CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def _batch(listing: Path, out: Path, model: codec.CodecModel, quality: int, engine: str, workers: int) -> dict:
    """One batch: wall and driver CPU seconds, the coding seconds its manifest records, its files."""
    wall, cpu = time.perf_counter(), time.process_time()
    summary = batch.encode_tree(
        f"@{listing}", out, model=model, quality=quality, engine=engine, workers=workers, quiet=True
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.failed:
        sys.exit(f"{engine} x{workers}: {summary.failed}")
    records = [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]
    files = {p.name: p.read_bytes() for p in out.glob("*.ddn")}
    return {"wall": wall, "cpu": cpu, "coding": sum(r["seconds"] for r in records), "files": files}


def measure(images: list[Path], model: codec.CodecModel, quality: int, work: Path) -> list[dict]:
    lists = {}
    for name, chosen in ((1, images[:1]), (2, images[:2]), ("all", images)):
        lists[name] = work / f"{name}.txt"
        lists[name].write_text("".join(f"{p.resolve()}\n" for p in chosen))
    megabytes = sum(p.stat().st_size for p in images) / 1e6
    rows = []
    for engine, workers in CONFIGS:
        first = _batch(lists[workers], work / f"{engine}{workers}-start", model, quality, engine, workers)
        run = _batch(lists["all"], work / f"{engine}{workers}-all", model, quality, engine, workers)
        start = first["wall"] - first["coding"] / workers
        row = {
            "engine": engine,
            "workers": workers,
            "start": start,
            "wall": run["wall"],
            "files_per_s": len(images) / run["wall"],
            "mb_per_s": megabytes / run["wall"],
            "coding": run["coding"],
            "overhead": (run["wall"] - run["coding"] / workers) / len(images),
            "driver_cpu": None if (engine, workers) == ("local", 1) else run["cpu"] / len(images),
            "files": run["files"],
        }
        rows.append(row)
        print(f"{engine} x{workers}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
    return rows


def speedup(by: dict, engine: str) -> str:
    one, two = by[engine, 1], by[engine, 2]
    return f"{one['wall'] / two['wall']:.2f}x; {(one['wall'] - one['start']) / (two['wall'] - two['start']):.2f}x"


def report(rows: list[dict], folder: Path, images: list[Path], quality: int, model: codec.CodecModel, **facts) -> str:
    reference = rows[0]["files"]
    by = {(r["engine"], r["workers"]): r for r in rows}
    lines = [
        "# ddncodec batch: throughput per engine and worker count, the driver's overhead per file",
        "",
        f"{len(images)} images of `{folder}` ({sum(p.stat().st_size for p in images) / 1e6:.2f} MB), quality "
        f"{quality}; {datetime.now(timezone.utc).isoformat(timespec='seconds')}; {platform.platform()}, "
        f"{os.cpu_count()} CPUs; load average {facts['load_before']:.1f} before, {os.getloadavg()[0]:.1f} at the "
        f"end{' (the machine is shared: other work ran meanwhile)' if facts['load_before'] >= 0.5 else ''}. "
        f"Model fingerprint `{model.fingerprint[:8].hex()}`, "
        f"loaded once in {facts['model_load']:.2f} s; Ray {facts['ray_version']} started here once in "
        f"{facts['ray_start']:.2f} s. Written by `benchmarks/batch.py`.",
        "",
        "| engine | workers | start s | wall s | files/s | MB/s | coding s (sum) | overhead s/file | driver CPU s/file | bytes = local x1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = "—" if r["driver_cpu"] is None else f"{r['driver_cpu']:.3f}"
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['start']:.2f} | {r['wall']:.2f} | {r['files_per_s']:.3f} | "
            f"{r['mb_per_s']:.3f} | {r['coding']:.2f} | {r['overhead']:.3f} | {cpu} | {r['files'] == reference} |"
        )
    lines += [
        "",
        f"Speed-up with 2 workers: local **{speedup(by, 'local')}**, Ray **{speedup(by, 'ray')}** (wall; "
        "after the start). All "
        f"{len(rows)} configurations wrote the same bytes: **{all(r['files'] == reference for r in rows)}**.",
        "",
        "start: a batch of one image per worker, its wall less its coding seconds per worker. overhead:",
        "(wall − coding / workers) / files, the start's share included. driver CPU: this process's CPU",
        "seconds per file (local x1 codes in the driver).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--quality", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch.md"))
    args = parser.parse_args()
    images = list_images([args.images])[: args.count]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    model = codec.load_model(args.model)
    model_load = time.perf_counter() - start

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = measure(images, model, args.quality, Path(tmp))
    finally:
        ray.shutdown()
    text = report(
        rows,
        args.images,
        images,
        args.quality,
        model,
        load_before=load_before,
        model_load=model_load,
        ray_start=ray_start,
        ray_version=ray.__version__,
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
