"""A bench run: one worker process per codec over the same images, their rows gathered
under a progress bar, then curves, BD-rates and speed summarised into one results dict
that ``report`` writes out."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from ddncodec import errors
from ddncodec.bench import curves, report
from ddncodec.bench.codecs import CODEC_KEYS, DDN_QUALITIES, CodecPlan, plans
from ddncodec.data import list_images
from ddncodec.errors import DDNError, ModelError, OptionError
from ddncodec.modelfile import resolve

KODAK = {f"kodim{i:02d}" for i in range(1, 25)}
PUBLISHED_KODAK = Path(__file__).resolve().parent / "published" / "kodak"  # package data
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
QUICK_IMAGES = 2
RATES = (0.05, 0.1, 0.25, 0.5, 1.0)  # bpp at which PSNR is interpolated
PSNR_LEVELS = (24, 26, 28, 30, 32, 34, 36, 38)  # dB at which ddncodec's rate is compared to each codec's
RSS_METHOD = (
    "peak RSS (VmHWM) of the codec's own worker process, reset (after glibc malloc_trim) before each encode "
    "and each decode"
)


@dataclass(frozen=True)
class BenchOptions:
    dataset: Path
    out: Path
    quick: bool = False
    qualities: tuple[int, ...] | None = None  # ddncodec's; None = all (or the quick three)
    model: str = "default"
    effort: int = 1  # ddncodec's encoder effort
    codecs: tuple[str, ...] = CODEC_KEYS
    threads: int | None = None  # torch threads in every worker; None = every core
    published: str = "auto"  # a folder, "none", or "auto": the shipped Kodak curves on Kodak
    quiet: bool = False


def published_folder(option: str, images: list[Path]) -> Path | None:
    """Published curves are Kodak means: by default they apply only to the 24 Kodak images."""
    if option == "none":
        return None
    if option == "auto":
        is_kodak = {p.stem for p in images} == KODAK
        return PUBLISHED_KODAK if is_kodak else None
    return Path(option)


def shown(path: Path) -> str:
    """A path inside the package or the repository relative to their root, so reports do not
    carry a machine's layout."""
    try:
        return str(path.resolve().relative_to(PACKAGE_ROOT))
    except ValueError:
        return str(path)


def model_path(name_or_path: str) -> Path:
    """Fail before any work starts if the model is missing (loading it is the worker's job)."""
    path = resolve(name_or_path)
    if not path.is_file():
        msg = f"{path}: model file not found"
        raise ModelError(msg)
    return path


def run_worker(plan: CodecPlan, images: list[Path], threads: int, progress: tqdm) -> tuple[list[dict], dict]:
    """Run one codec in a fresh process; re-raise its DDNError, or fail with its last stderr line."""
    job = {"plan": asdict(plan), "images": [str(p) for p in images], "threads": threads}
    rows, summary, failure = [], None, None
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "ddncodec.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            process.stdin.write(json.dumps(job))
            process.stdin.close()
            for line in process.stdout:
                record = json.loads(line)
                if "error" in record:
                    failure = record
                elif record.get("done"):
                    summary = record
                else:
                    rows.append(record | {"codec": plan.name})
                    progress.update(1)
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if failure is not None:
            kind = getattr(errors, failure["type"], DDNError)
            kind = kind if isinstance(kind, type) and issubclass(kind, DDNError) else DDNError
            raise kind(failure["error"])
        if code != 0 or summary is None:
            stderr.seek(0)
            lines = [line.strip() for line in stderr.read().splitlines() if line.strip()]
            msg = f"{plan.name} worker failed (exit {code}): {lines[-1] if lines else 'no message'}"
            raise ChildProcessError(msg)
    return rows, summary


def speed(name: str, rows: list[dict], summary: dict, timing_only: bool) -> dict:
    """Seconds per image (mean over every image and quality) and the peak RSS of a codec."""
    return {
        "name": name,
        "timing_only": timing_only,
        "enc_s": curves.mean([r["enc_s"] for r in rows]),
        "dec_s": curves.mean([r["dec_s"] for r in rows]),
        "enc_peak_mb": max((r["enc_peak_mb"] for r in rows if r["enc_peak_mb"] is not None), default=None),
        "dec_peak_mb": max((r["dec_peak_mb"] for r in rows if r["dec_peak_mb"] is not None), default=None),
        "idle_rss_mb": summary["idle_rss_mb"],
        "setup_s": summary["setup_s"],
        "info": summary["info"],
    }


def summarise(rd_curves: list[curves.Curve], speeds: list[dict]) -> dict:
    """PSNR at fixed rates for every curve; ddncodec's BD-rates and speed ratio to the stand-in."""
    psnr_at = {c.name: {str(rate): curves.psnr_at(c, rate) for rate in RATES} for c in rd_curves}
    ddn = next((c for c in rd_curves if c.name == "ddncodec"), None)
    bd = (
        []
        if ddn is None
        else [asdict(curves.bd_rate(c, ddn)) | {"source": c.source} for c in rd_curves if c is not ddn]
    )
    rate_vs = (
        {}
        if ddn is None
        else {
            c.name: {str(level): curves.rate_ratio_at(c, ddn, level) for level in PSNR_LEVELS}
            for c in rd_curves
            if c is not ddn and c.source == curves.SAME_RUN
        }
    )
    by_name = {s["name"]: s for s in speeds}
    ratio = None
    standin = next((s for s in speeds if s["timing_only"]), None)
    if "ddncodec" in by_name and standin is not None:
        ratio = {
            "reference": standin["name"],
            "encode": by_name["ddncodec"]["enc_s"] / standin["enc_s"],
            "decode": by_name["ddncodec"]["dec_s"] / standin["dec_s"],
        }
    return {"psnr_at": psnr_at, "bd_rate": bd, "rate_vs": rate_vs, "speed_ratio": ratio}


def usable_cpus() -> int:
    """Cores this process may run on (a container may see more than it gets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment(threads: int) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": usable_cpus(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": version("torch"),
        "pillow": version("pillow"),
        "ddncodec": version("ddncodec"),
        "rss_method": RSS_METHOD,
    }


def run(options: BenchOptions) -> dict:
    """Measure every codec on the dataset and write results.json, report.md and rd.png to ``options.out``."""
    images = list_images([options.dataset])[: QUICK_IMAGES if options.quick else None]
    unknown = set(options.codecs) - set(CODEC_KEYS)
    if unknown:
        msg = f"unknown codec(s) {', '.join(sorted(unknown))}; choose from {', '.join(CODEC_KEYS)}"
        raise OptionError(msg)
    if options.qualities is not None and (not options.qualities or set(options.qualities) - set(DDN_QUALITIES)):
        msg = f"ddncodec qualities must be among {DDN_QUALITIES[0]}..{DDN_QUALITIES[-1]}, got {options.qualities}"
        raise OptionError(msg)
    folder = published_folder(options.published, images)
    published = curves.load_published(folder) if folder is not None else []
    model = str(model_path(options.model)) if "ddncodec" in options.codecs else options.model
    notes = []
    if folder is None:
        notes.append("no published curves: they are Kodak means (pass --published DIR to overlay them anyway)")
    elif {p.stem for p in images} != KODAK:
        notes.append("the published curves are means over the 24 Kodak images, not over the images of this run")
    options.out.mkdir(parents=True, exist_ok=True)
    threads = options.threads or usable_cpus()
    jobs = plans(options.codecs, options.quick, options.qualities, model, options.effort)

    start, load_start = time.perf_counter(), os.getloadavg()
    rows, speeds, rd_curves = [], [], []
    total = len(images) * sum(len(p.qualities) for p in jobs)
    with tqdm(total=total, disable=options.quiet, unit="code", dynamic_ncols=True) as progress:
        for plan in jobs:
            progress.set_description(plan.name)
            codec_rows, summary = run_worker(plan, images, threads, progress)
            rows += codec_rows
            speeds.append(speed(plan.name, codec_rows, summary, plan.timing_only))
            if not plan.timing_only:
                rd_curves.append(curves.from_rows(plan.name, codec_rows))
    rd_curves += published
    results = {
        "dataset": {
            "path": str(options.dataset),
            "images": [p.name for p in images],
            "sizes": sorted({f"{r['width']}x{r['height']}" for r in rows}),
            "published": shown(folder) if folder is not None else None,
        },
        "run": environment(threads)
        | {"quick": options.quick, "wall_s": time.perf_counter() - start}
        | {"load_average_start": load_start, "load_average_end": os.getloadavg()},
        "curves": [asdict(c) for c in rd_curves],
        "speed": speeds,
        **summarise(rd_curves, speeds),
        "notes": notes,
        "rows": rows,
    }
    report.write(results, options.out)
    return results
