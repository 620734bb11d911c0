"""Rate–distortion curves: the mean over images of per-image bpp / PSNR / MS-SSIM at
each quality (CompressAI's convention, so published curves are comparable), the
published Kodak curves, Bjøntegaard deltas and PSNR at fixed rates."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from ddncodec.errors import InputError

SAME_RUN = "this run"
PUBLISHED = "published"
MIN_OVERLAP_DB = 0.5  # below this a BD-rate is one local rate ratio, not an average: give none


@dataclass
class Curve:
    """One codec's points, in the order of its quality sweep."""

    name: str
    source: str  # SAME_RUN or PUBLISHED
    bpp: list[float]
    psnr: list[float]
    ms_ssim: list[float | None]
    quality: list[int | None] = field(default_factory=list)
    enc_s: list[float] = field(default_factory=list)  # same-run curves only: mean seconds per image
    dec_s: list[float] = field(default_factory=list)


def mean(values: list) -> float | None:
    """Mean of per-image values; None if any is missing (e.g. MS-SSIM on a small image)."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def from_rows(name: str, rows: list[dict]) -> Curve:
    """Average one codec's per-image rows quality by quality."""
    qualities = list(dict.fromkeys(r["quality"] for r in rows))
    groups = [[r for r in rows if r["quality"] == q] for q in qualities]
    return Curve(
        name,
        SAME_RUN,
        bpp=[mean([r["bpp"] for r in g]) for g in groups],
        psnr=[mean([r["psnr"] for r in g]) for g in groups],
        ms_ssim=[mean([r["ms_ssim"] for r in g]) for g in groups],
        quality=qualities,
        enc_s=[mean([r["enc_s"] for r in g]) for g in groups],
        dec_s=[mean([r["dec_s"] for r in g]) for g in groups],
    )


def load_published(folder: Path) -> list[Curve]:
    """CompressAI-format result files (``results.bpp``, ``results.psnr-rgb``), one curve each."""
    curves = []
    for path in sorted(folder.glob("*.json")):
        try:
            results = json.loads(path.read_text())["results"]
            bpp, psnr = [float(v) for v in results["bpp"]], [float(v) for v in results["psnr-rgb"]]
            ms_ssim = [float(v) for v in results.get("ms-ssim-rgb", [])] or [None] * len(bpp)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            msg = f"{path}: not a CompressAI result file ({exc})"
            raise InputError(msg) from exc
        if not len(bpp) == len(psnr) == len(ms_ssim):
            msg = f"{path}: bpp, psnr-rgb and ms-ssim-rgb differ in length"
            raise InputError(msg)
        curves.append(Curve(path.stem, PUBLISHED, bpp, psnr, ms_ssim, [None] * len(bpp)))
    if not curves:
        msg = f"{folder}: no published curves (*.json) found"
        raise InputError(msg)
    return curves


def _finite_sorted(x: list[float], y: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points with finite values, sorted by x, one per distinct x (PCHIP needs x strictly increasing)."""
    pairs = sorted((a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b))
    xs, index = np.unique(np.array([p[0] for p in pairs]), return_index=True)
    return xs, np.array([pairs[i][1] for i in index])


@dataclass
class BDRate:
    """BD-rate of a test curve against an anchor over their common PSNR interval."""

    anchor: str
    percent: float | None  # negative: the test codec needs fewer bits; None when undefined
    low_db: float | None
    high_db: float | None
    note: str = ""


def _log_rates(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and log10 bpp, as the Bjøntegaard integral reads a curve."""
    return _finite_sorted(curve.psnr, [math.log10(b) for b in curve.bpp])


def bd_rate(anchor: Curve, test: Curve) -> BDRate:
    """Bjøntegaard delta rate (VCEG-M33 with PCHIP, as in JVET's CTC): log10 bpp as a
    function of PSNR, integrated over the overlapping PSNR range, averaged, back to percent."""
    d_a, r_a = _log_rates(anchor)
    d_t, r_t = _log_rates(test)
    if len(d_a) < 2 or len(d_t) < 2:
        return BDRate(anchor.name, None, None, None, "needs at least 2 points per curve")
    low, high = max(d_a[0], d_t[0]), min(d_a[-1], d_t[-1])
    if low >= high:
        note = (
            f"PSNR ranges do not overlap: {test.name} {d_t[0]:.2f}–{d_t[-1]:.2f} dB, "
            f"{anchor.name} {d_a[0]:.2f}–{d_a[-1]:.2f} dB"
        )
        return BDRate(anchor.name, None, None, None, note)
    if high - low < MIN_OVERLAP_DB:
        note = f"PSNR ranges overlap by only {high - low:.2f} dB, under the {MIN_OVERLAP_DB} dB needed for a BD-rate"
        return BDRate(anchor.name, None, float(low), float(high), note)
    area_a = PchipInterpolator(d_a, r_a).integrate(low, high)
    area_t = PchipInterpolator(d_t, r_t).integrate(low, high)
    percent = (10 ** ((area_t - area_a) / (high - low)) - 1) * 100
    return BDRate(anchor.name, float(percent), float(low), float(high))


def psnr_at(curve: Curve, rate: float) -> float | None:
    """PSNR at ``rate`` bpp by PCHIP on log bpp, only inside the measured rate range."""
    r, d = _finite_sorted([math.log(b) for b in curve.bpp], curve.psnr)
    if len(r) < 2 or not r[0] <= math.log(rate) <= r[-1]:
        return None
    return float(PchipInterpolator(r, d)(math.log(rate)))


def rate_ratio_at(anchor: Curve, test: Curve, psnr: float) -> float | None:
    """``test``'s bpp over ``anchor``'s at equal ``psnr`` dB (the curves the BD-rate
    integrates), only inside both measured PSNR ranges: where along the quality range a
    BD-rate is won and where it is lost."""
    ratios = []
    for d, r in (_log_rates(test), _log_rates(anchor)):
        if len(d) < 2 or not d[0] <= psnr <= d[-1]:
            return None
        ratios.append(float(PchipInterpolator(d, r)(psnr)))
    return 10 ** (ratios[0] - ratios[1])
