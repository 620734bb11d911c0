"""Fitting a model's ladder and rate-aware priors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import bsds_crops

from ddncodec import codec, tune
from ddncodec.codec import Rung
from ddncodec.modelfile import CodecModel
from ddncodec.tune import Point

DATA = Path(__file__).parent / "data"


def test_front_drops_dominated_points() -> None:
    points = [
        Point(Rung(1, 0), 0.1, 20),
        Point(Rung(2, 0), 0.2, 19),
        Point(Rung(3, 0), 0.3, 22),
        Point(Rung(4, 9), 0.3, 21),
    ]
    assert [p.rung.layers for p in tune.front(points)] == [1, 3]


@pytest.mark.parametrize(
    "psnr_at",
    [
        lambda n, bpp: 15 + n,  # straight in log-rate
        lambda n, bpp: 20 + 10 * math.sqrt(bpp),  # bends upwards in log-rate: a log-rate hull keeps only its ends
    ],
)
def test_pick_rungs_spreads_in_log_rate_and_rises(psnr_at) -> None:
    rates = {n: 0.01 * 1.5**n for n in range(1, 14)}
    points = [Point(Rung(n, 0), bpp, psnr_at(n, bpp)) for n, bpp in rates.items()]
    rungs = tune.pick_rungs(points, count=4, span=8)
    assert [r.layers for r in rungs] == [8, 10, 11, 13]  # 0.01·1.5^n for 1/8, 1/4, 1/2 and all of the top rate
    short = tune.pick_rungs(points[:3], count=4)
    assert [r.layers for r in short] == [1, 2, 3, 3]


def test_pick_rungs_prefers_the_hull_to_the_nearest_rate() -> None:
    low, high = Point(Rung(1, 0), 0.1, 20), Point(Rung(4, 0), 1.0, 26)
    nearest = Point(Rung(2, 0), 0.31, 20.5)  # 0.02 from the middle target (ln 0.316), 2.4 dB under the hull
    on_hull = Point(Rung(3, 1000), 0.36, 23.6)  # 0.13 from it
    points = [low, nearest, on_hull, high]
    assert tune.hull(points) == [low, on_hull, high]
    assert tune.gap_under(nearest, tune.hull(points)) == pytest.approx(20 + 3.6 * 0.21 / 0.26 - 20.5)
    assert [r.layers for r in tune.pick_rungs(points, count=3, span=10)] == [1, 3, 4]


def test_recounted_priors_make_keep_cheaper_for_the_rate_aware_encoder(tiny_model: CodecModel) -> None:
    crops = bsds_crops()
    rungs = [Rung(3, 10000.0)]
    recounted = tune.recount_priors(tiny_model, crops, rungs, rounds=2)
    finest = len(tiny_model.config.layers) - 1
    assert recounted.bits(finest)[0] < tiny_model.priors.bits(finest)[0]
    before = np.mean([len(codec.encode_pixels(c, "RGB", tiny_model, rungs[0]).data) for c in _uint8(crops)])
    model = CodecModel(tiny_model.network, recounted, tiny_model.card)
    after = np.mean([len(codec.encode_pixels(c, "RGB", model, rungs[0]).data) for c in _uint8(crops)])
    assert after < 0.97 * before


def _uint8(crops) -> list[np.ndarray]:
    return [((c.permute(1, 2, 0).numpy() + 0.5) * 255).round().astype(np.uint8) for c in crops]


def test_finalize_writes_ladder_and_saving_to_the_card(tiny_model: CodecModel, tmp_path: Path) -> None:
    tuned = tune.finalize(tiny_model, [DATA / "bsds"], [DATA / "bsds"], crops=8, crop=64, val_images=4, val_size=64)
    rungs = codec.ladder(tuned)
    assert len(rungs) == 8
    points = tuned.card["ladder_on_val"]
    assert [p["bpp"] for p in points] == sorted(p["bpp"] for p in points)
    assert tuned.card["entropy_coding"]["saving_percent"] > 0
    path = tmp_path / "tuned.safetensors"
    tuned.save(path)
    assert codec.ladder(codec.load_model(path)) == rungs
    with pytest.raises(codec.ModelError, match="ladder"):
        codec.ladder(CodecModel(tiny_model.network, tiny_model.priors, {"ladder": [[99, 0]] * 8}))
