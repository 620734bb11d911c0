"""bench: BD-rate and interpolation against known answers, metrics on known images,
the codecs and the bmshj2018 stand-in, peak-RSS measurement, worker failures, and
``ddncodec bench --quick`` end to end on the two Kodak crops with the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from tqdm import tqdm

import ddncodec
from ddncodec.bench import metrics, standin, worker
from ddncodec.bench.codecs import PILLOW_FORMATS, CodecPlan
from ddncodec.bench.curves import SAME_RUN, Curve, bd_rate, load_published, psnr_at, rate_ratio_at
from ddncodec.bench.runner import run_worker
from ddncodec.cli import main
from ddncodec.codec import psnr

DATA = Path(__file__).parent / "data"
PUBLISHED = Path(__file__).parent.parent / "ddncodec" / "bench" / "published" / "kodak"


def curve(bpp: list[float], psnr: list[float], name: str = "test") -> Curve:
    return Curve(name, SAME_RUN, list(bpp), list(psnr), [None] * len(bpp))


ANCHOR = curve([0.1, 0.2, 0.4, 0.8, 1.6], [24.0, 27.5, 30.5, 33.0, 35.0], "anchor")


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25])
def test_bd_rate_of_the_anchor_at_scaled_rates_is_the_scale(factor: float) -> None:
    result = bd_rate(ANCHOR, curve([b * factor for b in ANCHOR.bpp], ANCHOR.psnr))
    assert result.percent == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert (result.low_db, result.high_db) == (24.0, 35.0)


def test_bd_rate_integrates_over_the_overlap_only() -> None:
    # log10 bpp = D/10 - 2 is linear, so PCHIP reproduces it exactly; 2 dB better at every
    # rate means 10**-0.2 of the bits over the common interval [22, 35] dB.
    psnr = list(range(20, 36))
    anchor = curve([10 ** (d / 10 - 2) for d in psnr], psnr)
    better = curve(anchor.bpp, [d + 2 for d in psnr])
    result = bd_rate(anchor, better)
    assert result.percent == pytest.approx((10**-0.2 - 1) * 100, abs=1e-9)
    assert (result.low_db, result.high_db) == (22, 35)


@pytest.mark.parametrize(("test", "expected"), [("bmshj2018-factorized", 33.0), ("vtm", -18.0)])
def test_bd_rate_matches_the_reference_numbers_on_published_curves(test: str, expected: float) -> None:
    """codec-anchors §1.2 (cross-checked there against the `bjontegaard` package): vs BPG 4:4:4, PCHIP."""
    published = {c.name: c for c in load_published(PUBLISHED)}
    assert set(published) == {
        "bmshj2018-factorized",
        "bmshj2018-hyperprior",
        "mbt2018",
        "cheng2020-anchor",
        "bpg-444",
        "vtm",
    }
    assert bd_rate(published["bpg-444"], published[test]).percent == pytest.approx(expected, abs=0.05)


def test_rate_ratio_at_equal_psnr_is_the_local_rate_ratio_inside_both_ranges() -> None:
    # The test curve spends 0.7x the anchor's bits below 30 dB and 1.4x above: a BD-rate
    # would average the two; the level by level ratio shows each.
    test = curve([b * (0.7 if d < 30 else 1.4) for b, d in zip(ANCHOR.bpp, ANCHOR.psnr, strict=True)], ANCHOR.psnr)
    assert rate_ratio_at(ANCHOR, test, 27.5) == pytest.approx(0.7, abs=1e-9)
    assert rate_ratio_at(ANCHOR, test, 33.0) == pytest.approx(1.4, abs=1e-9)
    assert rate_ratio_at(ANCHOR, test, 24.0) == pytest.approx(0.7, abs=1e-9)
    assert rate_ratio_at(ANCHOR, test, 36.0) is None  # above the anchor's top
    assert rate_ratio_at(ANCHOR, curve([0.3, 0.6], [29.0, 31.0]), 28.0) is None  # below the test's range


def test_bd_rate_says_so_when_ranges_do_not_overlap() -> None:
    result = bd_rate(ANCHOR, curve([0.01, 0.02, 0.05], [15.0, 16.5, 18.0]))
    assert result.percent is None
    assert "do not overlap" in result.note and "15.00–18.00 dB" in result.note
    assert bd_rate(ANCHOR, curve([0.3], [30.0])).percent is None
    barely = bd_rate(ANCHOR, curve([0.02, 0.05, 0.09], [20.0, 22.0, 24.3]))
    assert barely.percent is None and (barely.low_db, barely.high_db) == (24.0, 24.3)
    assert "overlap by only 0.30 dB" in barely.note


def test_psnr_at_interpolates_inside_the_measured_range_only() -> None:
    assert psnr_at(ANCHOR, 0.4) == pytest.approx(30.5)
    assert 27.5 < psnr_at(ANCHOR, 0.3) < 30.5
    assert psnr_at(ANCHOR, 0.05) is None
    assert psnr_at(ANCHOR, 2.0) is None


def test_metrics_on_known_images() -> None:
    image = np.asarray(Image.open(DATA / "kodak" / "kodim23_crop.png").convert("RGB"))
    off_by_one = np.where(image < 255, image + 1, image - 1).astype(np.uint8)
    assert psnr(image, off_by_one, "RGB") == pytest.approx(10 * math.log10(255**2), abs=1e-9)
    assert psnr(image, image, "RGB") == math.inf
    assert metrics.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < metrics.ms_ssim(image, off_by_one) < 1.0
    assert metrics.ms_ssim(image[:128, :128], image[:128, :128]) is None
    assert metrics.bpp(1000, 100, 80) == 1.0


@pytest.mark.parametrize("key", list(PILLOW_FORMATS))
def test_pillow_codecs_trade_bytes_for_quality(key: str) -> None:
    codec = PILLOW_FORMATS[key]
    image = Image.open(DATA / "kodak" / "kodim23_crop.png").convert("RGB")
    reference = np.asarray(image)
    low, high = codec.encode(image, 10), codec.encode(image, 90)
    decoded = [np.asarray(codec.decode(data).convert("RGB")) for data in (low, high)]
    assert all(d.shape == reference.shape for d in decoded)
    assert len(low) < len(high)
    assert 20 < psnr(reference, decoded[0], "RGB") < psnr(reference, decoded[1], "RGB")
    assert psnr(reference, decoded[1], "RGB") > 35


def test_standin_is_the_factorized_architecture_and_codes_its_latent_losslessly() -> None:
    codec = standin.Codec()
    n, m = 128, 192

    def conv(cin: int, cout: int) -> int:  # 5x5 kernel + bias
        return cin * 25 * cout + cout

    g_a = conv(3, n) + 2 * conv(n, n) + conv(n, m) + 3 * (n * n + n)  # 3 GDNs: gamma + beta
    g_s = conv(m, n) + 2 * conv(n, n) + conv(n, 3) + 3 * (n * n + n)
    assert codec.info()["parameters"] == g_a + g_s == 2_986_435
    image = Image.open(DATA / "kodak" / "kodim05_crop.png").convert("RGB")
    data = codec.encode(image)
    symbols, width, height = codec.decode_symbols(data)
    assert (width, height) == image.size
    assert symbols.shape == (192, 192 // 16, 256 // 16)
    assert np.array_equal(symbols, codec.analyse(image))
    assert np.count_nonzero(symbols) > symbols.size // 4  # a latent worth coding, not all zeros
    assert codec.decode(data).size == image.size


@pytest.mark.skipif(not worker.CLEAR_REFS.exists(), reason="peak RSS needs Linux /proc/self/clear_refs")
def test_peak_rss_window_sees_an_allocation_and_resets() -> None:
    worker.reset_peak()
    before = worker.rss_mb("VmHWM")
    block = np.ones(200 * 2**20, dtype=np.uint8)
    assert worker.rss_mb("VmHWM") > before + 190
    del block
    worker.reset_peak()
    assert worker.rss_mb("VmHWM") < before + 50


@pytest.mark.slow
def test_a_crashing_worker_fails_with_its_last_error_line(tmp_path: Path) -> None:
    plan = CodecPlan("jpeg", ([1],))  # type: ignore[arg-type]  # Pillow raises TypeError inside the worker
    with pytest.raises(ChildProcessError, match=r"JPEG worker failed \(exit 1\): TypeError"):
        run_worker(plan, [DATA / "kodak" / "kodim05_crop.png"], 1, tqdm(disable=True))


def bench(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["bench", *args])
    return result.exit_code, result.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddncodec: error: "), stderr
    return lines[0]


def test_bench_refuses_bad_arguments_before_doing_any_work(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "out"
    kodak = str(DATA / "kodak")
    code, stderr = bench(str(tmp_path / "missing"), "--out", str(out))
    assert code == 2 and "not a folder" in one_error_line(stderr)
    (tmp_path / "empty").mkdir()
    code, stderr = bench(str(tmp_path / "empty"), "--out", str(out))
    assert code == 2 and "no images found" in one_error_line(stderr)
    code, stderr = bench(kodak, "--out", str(out), "--model", str(tmp_path / "nope.safetensors"))
    assert code == 2 and "model file not found" in one_error_line(stderr)
    code, stderr = bench(kodak, "--out", str(out), "--model", str(tiny_model_path), "--qualities", "0,9")
    assert code == 1 and "qualities" in one_error_line(stderr)
    code, stderr = bench(kodak, "--out", str(out), "--qualities", "one,two")
    assert code == 1 and "comma-separated" in one_error_line(stderr)
    code, stderr = bench(kodak, "--out", str(out), "--codecs", "jpeg,bpg")
    assert code == 1 and "unknown codec(s) bpg" in one_error_line(stderr)
    assert not out.exists()


@pytest.mark.slow
def test_bench_reports_a_model_the_worker_cannot_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    out = tmp_path / "out"
    code, stderr = bench(
        str(DATA / "kodak"), "--out", str(out), "--codecs", "ddncodec", "--model", str(junk), "--quiet"
    )
    assert code == 2 and "not a readable model file" in one_error_line(stderr)
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--out", str(out), "--quick", "--model", str(tiny_model_path), "--threads", "1", "--quiet"]
    code, stderr = bench(str(DATA / "kodak"), *args, "--published", str(PUBLISHED))
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]

    names = ["ddncodec", "JPEG", "WebP", "AVIF", "JPEG XL", "bmshj2018-factorized (stand-in)"]
    assert [s["name"] for s in results["speed"]] == names
    assert {n: sum(r["codec"] == n for r in rows) for n in names} == {n: 6 for n in names[:-1]} | {names[-1]: 2}
    for row in rows:
        assert row["enc_s"] > 0 and row["dec_s"] > 0
        assert (row["width"], row["height"]) == (256, 192)
        if row["bytes"] is not None:
            assert row["bpp"] == row["bytes"] * 8 / (256 * 192)
            assert 10 < row["psnr"] < 60 and 0 < row["ms_ssim"] <= 1
    if worker.CLEAR_REFS.exists():
        assert all(s["enc_peak_mb"] >= s["idle_rss_mb"] > 0 for s in results["speed"])

    ddn = next(c for c in results["curves"] if c["name"] == "ddncodec")
    assert ddn["quality"] == [1, 4, 8]
    assert ddn["bpp"] == sorted(ddn["bpp"])
    mean_bpp = np.mean([r["bpp"] for r in rows if r["codec"] == "ddncodec" and r["quality"] == 8])
    assert ddn["bpp"][-1] == pytest.approx(mean_bpp)

    anchors = [e["anchor"] for e in results["bd_rate"]]
    assert anchors[:4] == ["JPEG", "WebP", "AVIF", "JPEG XL"] and len(anchors) == 10
    for entry in results["bd_rate"]:
        assert (entry["percent"] is None) == bool(entry["note"])
    assert results["speed_ratio"]["encode"] > 0
    assert "the published curves are means over the 24 Kodak images" in results["notes"][0]

    report = (out / "report.md").read_text()
    assert "## Headline (ddncodec)" in report and "BD-rate vs bmshj2018-factorized" in report
    with Image.open(out / "rd.png") as plot:
        assert plot.format == "PNG" and plot.width > 1000
    assert sorted(p.name for p in out.iterdir()) == ["rd.png", "report.md", "results.json"]


@pytest.mark.slow
def test_bench_runs_ddncodec_at_the_effort_asked(tmp_path: Path, tiny_model_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--out", str(out), "--quick", "--model", str(tiny_model_path), "--threads", "1", "--quiet"]
    code, stderr = bench(str(DATA / "kodak"), *args, "--codecs", "ddncodec", "--qualities", "8", "--effort", "2")
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    images = sorted((DATA / "kodak").glob("*.png"))
    sizes = [len(ddncodec.encode(path, 8, model=tiny_model_path, effort=2)) for path in images]
    assert [r["bytes"] for r in sorted(results["rows"], key=lambda r: r["image"])] == sizes
    assert "encoder effort 2" in (out / "report.md").read_text()
