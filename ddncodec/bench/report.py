"""A bench run on disk: ``results.json`` (every number, per-image rows included),
``report.md`` (the tables a reader needs) and ``rd.png`` (the curves, published ones
dashed). Everything here reads only the results dict, so a report can be rebuilt from
``results.json`` alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ddncodec.atomic import write_atomically
from ddncodec.bench import metrics
from ddncodec.bench.standin import PACKAGE_PIXELS, PACKAGE_SECONDS

HEADLINE_RATES = ("0.1", "0.25", "0.5")
BPP_TICKS = (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4)
HEADLINE_ANCHORS = ("JPEG", "WebP", "bmshj2018-factorized")


def clean(value: object) -> object:
    """JSON has no inf or NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def dumps(results: dict) -> str:
    """Indented JSON, but one line per per-image row: a Kodak run has ~1,800 of them."""
    head = json.dumps(clean({k: v for k, v in results.items() if k != "rows"}), indent=1, allow_nan=False)
    rows = ",\n  ".join(json.dumps(clean(r), allow_nan=False) for r in results["rows"])
    return f'{head[:-2]},\n "rows": [\n  {rows}\n ]\n}}\n'


def write(results: dict, out: Path) -> None:
    text = dumps(results)
    write_atomically(out / "results.json", lambda p: p.write_text(text))
    write_atomically(out / "report.md", lambda p: p.write_text(markdown(results)))
    write_atomically(out / "rd.png", lambda p: plot(results, p))


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def bd_cell(entry: dict | None) -> str:
    if entry is None:
        return "–"
    if entry["percent"] is not None:
        return f"{entry['percent']:+.1f} %"
    return "no overlap" if entry["low_db"] is None else "overlap too small"


def headline(results: dict) -> list[str]:
    """The README table: ddncodec's PSNR at three rates, BD-rates and seconds per image."""
    psnr = results["psnr_at"].get("ddncodec")
    speed = next((s for s in results["speed"] if s["name"] == "ddncodec"), None)
    if psnr is None or speed is None:
        return ["(ddncodec was not run)"]
    bd = {e["anchor"]: e for e in results["bd_rate"]}
    anchors = [a for a in HEADLINE_ANCHORS if a in bd]
    curve = next(c for c in results["curves"] if c["name"] == "ddncodec")
    header = [f"PSNR @ {r} bpp" for r in HEADLINE_RATES] + [f"BD-rate vs {a}" for a in anchors]
    header += [f"encode s/image ({results['run']['threads']} threads)", "decode s/image"]
    row = [fmt(psnr[r], 2, " dB") for r in HEADLINE_RATES]
    row += [bd_cell(bd[a]) + (f" ({interval(bd[a])} dB)" if bd[a]["percent"] is not None else "") for a in anchors]
    row += [seconds(speed["enc_s"], curve["enc_s"]), seconds(speed["dec_s"], curve["dec_s"])]
    qualities = ", ".join(str(q) for q in curve["quality"])
    note = f"Seconds: mean over images and qualities {qualities}; in brackets the range of the per-quality means."
    return [*table(header, [row]), "", note]


def interval(entry: dict) -> str:
    return f"{entry['low_db']:.2f}–{entry['high_db']:.2f}" if entry["low_db"] is not None else "–"


def seconds(mean: float | None, per_quality: list[float]) -> str:
    """A mean, with the spread over qualities when there is one."""
    spread = f" ({min(per_quality):.2f}–{max(per_quality):.2f})" if len(per_quality) > 1 else ""
    return fmt(mean, 2) + spread


def markdown(results: dict) -> str:
    run, data = results["run"], results["dataset"]
    title = Path(data["path"]).name
    lines = [
        f"# ddncodec bench: {title}",
        "",
        f"{len(data['images'])} images ({', '.join(data['sizes'])}) from `{data['path']}`"
        f"{', quick run' if run['quick'] else ''}; {run['date']}; {run['platform']}, {run['cpus']} CPUs, "
        f"{run['threads']} torch threads; load average {run['load_average_start'][0]:.1f} at the start, "
        f"{run['load_average_end'][0]:.1f} at the end; {run['wall_s'] / 60:.1f} min in all.",
    ]
    for s in results["speed"]:
        if s["name"] == "ddncodec":
            info = s["info"]
            card = {k: info["card"][k] for k in ("steps", "train_seconds", "data") if k in info["card"]}
            lines.append(
                f"Model: fingerprint `{info['fingerprint']}`, {info['layers']} layers, encoder effort "
                f"{info.get('effort', 1)}, "
                f"`{json.dumps(card)}` (the whole model card is in results.json)."
            )
    lines += ["", "## Headline (ddncodec)", "", *headline(results), "", "## Rate–distortion", "", "![RD](rd.png)", ""]

    lines += ["### PSNR (dB) at fixed rates", "", "PCHIP on log bpp inside each curve's measured range, else –.", ""]
    rates = list(next(iter(results["psnr_at"].values()), {}))
    lines += table(
        ["codec", "source", *(f"{r} bpp" for r in rates)],
        [[c["name"], c["source"], *(fmt(results["psnr_at"][c["name"]][r]) for r in rates)] for c in results["curves"]],
    )
    if results["bd_rate"]:
        lines += ["", "### BD-rate of ddncodec (negative = fewer bits at equal PSNR)", ""]
        lines += table(
            ["anchor", "source", "BD-rate", "PSNR interval (dB)", "note"],
            [[e["anchor"], e["source"], bd_cell(e), interval(e), e["note"]] for e in results["bd_rate"]],
        )
    lines += rate_vs_section(results)
    lines += ["", "### Points measured in this run (means over images)", ""]
    for c in results["curves"]:
        if c["source"] != "this run":
            continue
        lines += [f"**{c['name']}**", ""]
        lines += table(
            ["quality", "bpp", "PSNR (dB)", "MS-SSIM", "encode s", "decode s"],
            [
                [str(q), fmt(b, 4), fmt(p), fmt(m, 4), fmt(e, 3), fmt(d, 3)]
                for q, b, p, m, e, d in zip(
                    c["quality"], c["bpp"], c["psnr"], c["ms_ssim"], c["enc_s"], c["dec_s"], strict=True
                )
            ],
        )
        lines.append("")
    lines += speed_section(results)
    lines += method_section(results)
    return "\n".join(lines) + "\n"


def rate_vs_section(results: dict) -> list[str]:
    """ddncodec's bits against each same-run codec's at equal PSNR, level by level."""
    rate_vs = results.get("rate_vs") or {}  # absent from reports written before it was measured
    if not rate_vs:
        return []
    levels = list(next(iter(rate_vs.values())))
    rows = [
        [name, *("–" if r is None else f"{100 * (r - 1):+.1f} %" for r in ratios.values())]
        for name, ratios in rate_vs.items()
    ]
    return [
        "",
        "### ddncodec's bits against each codec's at equal PSNR",
        "",
        "Negative: ddncodec needs fewer bits. PCHIP of log bpp on PSNR (the curves the BD-rate averages), "
        "inside both measured ranges only, else –.",
        "",
        *table(["codec", *(f"{level} dB" for level in levels)], rows),
    ]


def speed_section(results: dict) -> list[str]:
    lines = ["## Speed and memory", ""]
    lines += table(
        [
            "codec",
            "encode s/image",
            "decode s/image",
            "peak RSS encode (MiB)",
            "peak RSS decode (MiB)",
            "idle RSS (MiB)",
        ],
        [
            [
                s["name"],
                fmt(s["enc_s"], 3),
                fmt(s["dec_s"], 3),
                fmt(s["enc_peak_mb"], 0),
                fmt(s["dec_peak_mb"], 0),
                fmt(s["idle_rss_mb"], 0),
            ]
            for s in results["speed"]
        ],
    )
    lines += [
        "",
        "Seconds: mean over every image and quality of one timed call each (model loading and metrics excluded). "
        "Peak RSS: the worker process's peak resident memory during the call (interpreter, torch, model and image "
        "included); idle RSS: the same process after imports and model loading, before the first image.",
    ]
    ratio = results["speed_ratio"]
    if ratio is not None:
        standin = next(s for s in results["speed"] if s["name"] == ratio["reference"])
        versus = ""
        if results["dataset"]["sizes"] and all(pixels(size) == PACKAGE_PIXELS for size in results["dataset"]["sizes"]):
            versus = (
                f" (stand-in / package: {standin['enc_s'] / PACKAGE_SECONDS[0]:.2f}x encode, "
                f"{standin['dec_s'] / PACKAGE_SECONDS[1]:.2f}x decode, same image size)"
            )
        lines += [
            "",
            f"ddncodec / {ratio['reference']}: **{ratio['encode']:.1f}x** the encode time, "
            f"**{ratio['decode']:.1f}x** the decode time on the same images in the same run. "
            f"The stand-in re-implements the architecture (N=128, M=192, random weights) and range-codes its latent "
            f"with constriction (see `ddncodec/bench/standin.py`); here it took {standin['enc_s']:.2f} s / "
            f"{standin['dec_s']:.2f} s per image, where CompressAI 1.2.8 itself took "
            f"{PACKAGE_SECONDS[0]} s / {PACKAGE_SECONDS[1]} s on a 768x512 image on an idle 2-core machine "
            f"(the measurement the stand-in's module records){versus}.",
        ]
    return [*lines, ""]


def pixels(size: str) -> int:
    """Pixels of a "WxH" size."""
    width, height = size.split("x")
    return int(width) * int(height)


def method_section(results: dict) -> list[str]:
    lines = [
        "## Method",
        "",
        "- bpp: whole-file bytes x 8 / (width x height of the original image).",
        "- PSNR-RGB on the 8-bit decoded image, MSE over all H x W x 3 values, per image; MS-SSIM: pytorch-msssim "
        f"(data_range 255; none for images with a side under {metrics.MS_SSIM_MIN_SIDE} px). Curves are means of "
        "per-image values at each quality (CompressAI's convention).",
        "- BD-rate: Bjøntegaard, log10 bpp as a PCHIP function of PSNR integrated over the two curves' overlapping "
        "PSNR interval; where the intervals do not overlap no number is given.",
        f"- Memory: {results['run']['rss_method']}.",
        f"- Software: Python {results['run']['python']}, torch {results['run']['torch']}, "
        f"Pillow {results['run']['pillow']}, ddncodec {results['run']['ddncodec']}.",
    ]
    for s in results["speed"]:
        if s["name"] != "ddncodec":
            lines.append(f"- {s['name']}: `{json.dumps(s['info'], sort_keys=True)}`.")
    if results["dataset"]["published"]:
        lines.append(
            f"- Published curves from `{results['dataset']['published']}` (CompressAI's Kodak results; "
            "see the README there). They are means over the 24 Kodak images."
        )
    lines += [f"- Note: {n}" for n in results["notes"]]
    lines.append("- Per-image rows: `results.json` (`rows`).")
    return lines


def plot(results: dict, path: Path) -> None:
    """PSNR and MS-SSIM (dB) against bpp on a log axis: same-run solid, published dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for c in results["curves"]:
        ddn, published = c["name"] == "ddncodec", c["source"] != "this run"
        style = {
            "linestyle": "--" if published else "-",
            "marker": "." if published else "o",
            "markersize": 4 if published else 3,
            "linewidth": 2.5 if ddn else 1.2,
            "color": "black" if ddn else None,
            "label": f"{c['name']} (published)" if published else c["name"],
        }
        for ax, values in zip(axes, (c["psnr"], c["ms_ssim"]), strict=True):
            points = sorted(
                (b, v if ax is axes[0] else metrics.ms_ssim_db(v))
                for b, v in zip(c["bpp"], values, strict=True)
                if v is not None and math.isfinite(v)
            )
            if points:
                ax.plot(*zip(*points, strict=True), **style)
    for ax, ylabel in zip(axes, ("PSNR-RGB (dB)", "MS-SSIM (dB)"), strict=True):
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        ticks = [t for t in BPP_TICKS if low <= t <= high]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(results['dataset']['path']).name}: {len(results['dataset']['images'])} images")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
