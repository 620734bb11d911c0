"""One codec's share of a bench run, in a process of its own so that its memory and
threads are its own. ``python -m ddncodec.bench.worker`` reads a job (JSON) on stdin
and writes one JSON line per image and quality, then a summary line, on stdout.

Peak memory: on Linux the kernel's peak-resident-set mark (VmHWM) is reset through
``/proc/self/clear_refs`` right before each encode and each decode and read right after,
so a row carries the peak RSS of the process during that one call: the interpreter,
imports, model and source image included, metrics excluded. Where /proc is missing the
peaks are None.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image

from ddncodec.bench import metrics
from ddncodec.bench.codecs import Codec, CodecPlan
from ddncodec.codec.workers import release_freed
from ddncodec.data import load_rgb
from ddncodec.errors import DDNError
from ddncodec.metrics import psnr

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_mb(field: str = "VmRSS") -> float | None:
    """A memory figure of this process from /proc (VmRSS now, VmHWM the peak), in MiB."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> None:
    """Start a new peak-RSS window (writing 5 to clear_refs resets VmHWM to VmRSS), after
    handing freed heap back to the system so that earlier calls do not count."""
    release_freed()
    with contextlib.suppress(OSError):
        CLEAR_REFS.write_text("5")


def measure(codec: Codec, image: Image.Image, quality: int | None, timing_only: bool) -> dict:
    """Encode and decode once, timed and with peak RSS; rate and quality unless timing only."""
    reset_peak()
    start = time.perf_counter()
    data = codec.encode(image, quality)
    enc_s = time.perf_counter() - start
    enc_peak = rss_mb("VmHWM")
    reset_peak()
    start = time.perf_counter()
    decoded = codec.decode(data)
    dec_s = time.perf_counter() - start
    dec_peak = rss_mb("VmHWM")
    row = {"enc_s": enc_s, "dec_s": dec_s, "enc_peak_mb": enc_peak, "dec_peak_mb": dec_peak}
    if timing_only:
        return row | {"bytes": None, "bpp": None, "psnr": None, "ms_ssim": None}
    reference = np.asarray(image)
    output = np.asarray(decoded.convert("RGB"))
    if output.shape != reference.shape:
        msg = f"{codec.name} decoded {output.shape[1]}x{output.shape[0]}, expected {image.width}x{image.height}"
        raise DDNError(msg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # untimed; one thread is the fastest on a busy machine
    try:
        similarity = metrics.ms_ssim(reference, output)
    finally:
        torch.set_num_threads(threads)
    return row | {
        "bytes": len(data),
        "bpp": metrics.bpp(len(data), image.width, image.height),
        "psnr": psnr(reference, output, "RGB"),
        "ms_ssim": similarity,
    }


def run(job: dict, out: TextIO) -> None:
    def emit(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    torch.set_num_threads(job["threads"])
    plan = CodecPlan(**{**job["plan"], "qualities": tuple(job["plan"]["qualities"])})
    try:
        start = time.perf_counter()
        codec = plan.build()
        setup_s = time.perf_counter() - start
        idle_mb = rss_mb()
        for path in map(Path, job["images"]):
            image = Image.fromarray(load_rgb(path))
            for quality in plan.qualities:
                row = measure(codec, image, quality, plan.timing_only)
                emit({"image": path.name, "width": image.width, "height": image.height, "quality": quality} | row)
        emit({"done": True, "setup_s": setup_s, "idle_rss_mb": idle_mb, "info": codec.info()})
    except DDNError as exc:
        emit({"error": str(exc), "type": type(exc).__name__})
        sys.exit(1)


def main() -> None:
    """Keep the protocol stream clean: anything a library prints goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    run(json.load(sys.stdin), out)


if __name__ == "__main__":
    main()
