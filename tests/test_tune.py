"""Fitting a model's ladder and rate-aware priors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from make_tiny_model import bsds_crops

from ddncodec import codec, tune
from ddncodec.codec import Rung
from ddncodec.context import CONTEXTS, INIT_TOTAL
from ddncodec.errors import ModelError
from ddncodec.model import nearest
from ddncodec.modelfile import CodecModel
from ddncodec.priors import Priors
from ddncodec.tune import Point

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow


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


def test_pick_rungs_runs_fewer_layers_when_that_is_about_as_good() -> None:
    low, high = Point(Rung(1, 0), 0.1, 20), Point(Rung(9, 0), 1.0, 26)
    many = Point(Rung(8, 1000), 0.33, 23.0)  # the nearest to the middle target, on the hull
    few = Point(Rung(5, 1000), 0.31, 22.72)  # 6 % less rate, 0.02 dB under the hull: as good, 3 layers fewer
    poor = Point(Rung(3, 1000), 0.30, 22.0)  # fewer still, but 0.6 dB under the hull
    points = [low, poor, few, many, high]
    assert tune.gap_under(few, tune.hull(points)) == pytest.approx(0.02, abs=0.01)
    assert [r.layers for r in tune.pick_rungs(points, count=3, span=10)] == [1, 5, 9]
    worse = Point(Rung(5, 1000), 0.31, 22.60)  # 0.14 dB under: no longer as good
    assert [r.layers for r in tune.pick_rungs([low, poor, worse, many, high], count=3, span=10)] == [1, 8, 9]


def test_recounted_priors_make_keep_cheaper_for_the_rate_aware_encoder(tiny_model: CodecModel) -> None:
    crops = bsds_crops()
    rungs = [Rung(3, 10000.0)]
    recounted = tune.recount_priors(tiny_model, crops, rungs, rounds=2)
    assert recounted.sets == 1
    finest = len(tiny_model.config.layers) - 1
    assert recounted.bits(finest)[0] < tiny_model.priors.bits(finest)[0]
    before = np.mean([len(codec.encode_pixels(c, "RGB", tiny_model, rungs[0]).data) for c in _uint8(crops)])
    model = CodecModel(tiny_model.network, recounted, tiny_model.card)
    after = np.mean([len(codec.encode_pixels(c, "RGB", model, rungs[0]).data) for c in _uint8(crops)])
    assert after < 0.97 * before


def test_recount_counts_one_table_set_per_rung(tiny_model: CodecModel) -> None:
    crops = bsds_crops()
    rungs = [Rung(3, 0.0), Rung(2, 3000.0), Rung(3, 30000.0)]
    recounted = tune.recount_priors(tiny_model, crops, rungs)
    assert recounted.sets == 3
    for layer, spec in enumerate(tiny_model.config.layers):
        assert recounted.tables[layer].shape == (3, CONTEXTS, spec.k)
        # λ = 0 is the nearest choice, the one the tiny model's own tables were counted with.
        assert np.array_equal(recounted.tables[layer][0], tiny_model.priors.tables[layer][0])
    # Every layer is counted at every rung (a set serves any layer count, even the rung's
    # unused third layer). The higher λ, the more the choice crowds onto cheap symbols:
    # lower entropy, and on the finer layers (whose candidates are close) more keeps.
    # (Measured: entropies 1.92/1.92/1.91, 1.54/1.45/1.12, 2.45/2.37/1.51 bits.)
    entropy = np.array(
        [[-(p * np.log2(p)).sum() for p in (recounted.probabilities(layer, s) for s in range(3))] for layer in range(3)]
    )
    assert (np.diff(entropy, axis=1) <= 1e-9).all(), entropy
    assert (entropy[1:, 0] - entropy[1:, 2] > 0.3).all(), entropy
    for layer in (1, 2):
        keep = [recounted.bits(layer, s)[0] for s in range(3)]
        assert keep[0] > keep[1] > keep[2], (layer, keep)


def test_tally_counts_every_cell_by_its_context(tiny_model: CodecModel) -> None:
    crops = bsds_crops()[:3, :, :64, :64]
    counts = tune.tally(tiny_model.network, crops, nearest, batch=2)
    symbols = [[] for _ in tiny_model.config.layers]
    for crop in crops:
        walk = tiny_model.network.walk((1, 64, 64), nearest(crop[None]))
        for layer, (idx, _) in enumerate(walk):
            symbols[layer].append(idx.flatten())
    for layer, spec in enumerate(tiny_model.config.layers):
        assert counts[layer].shape == (CONTEXTS, spec.k)
        assert counts[layer].sum() == 3 * (64 // spec.cell) ** 2
        marginal = np.bincount(np.concatenate([s.numpy() for s in symbols[layer]]), minlength=spec.k)
        assert np.array_equal(counts[layer].sum(0), marginal)
    assert counts[0][1::2].sum() == 0  # the first layer has no parent, so no "parent keeps" contexts
    assert counts[1][1::2].sum() > 0
    assert tune.count_priors(tiny_model.network, crops, nearest).tables[1].tolist() == (
        Priors.from_counts(counts).tables[1].tolist()
    )


def test_priors_tables_broadcast_and_refuse_bad_shapes() -> None:
    flat = Priors([np.arange(1, 5), np.full(3, 7)])
    assert flat.sets == 1
    assert flat.tables[0].shape == (1, CONTEXTS, 4)
    assert all((row == np.arange(1, 5)).all() for row in flat.initial(0, 0))
    assert flat.probabilities(0) == pytest.approx(np.arange(1, 5) / 10)
    assert flat.bits(1) == pytest.approx([math.log2(3)] * 3)
    sets = Priors([np.ones((2, CONTEXTS, 4)), np.ones((2, CONTEXTS, 3)) * np.arange(1, 3)[:, None, None]])
    assert sets.sets == 2
    assert sets.initial(1, 1).tolist() == [[2, 2, 2]] * CONTEXTS
    uniform = Priors.uniform([4, 16], sets=3)
    assert uniform.sets == 3
    assert uniform.probabilities(1, 2) == pytest.approx(np.full(16, 1 / 16))
    for bad in ([np.array([1, 0, 2])], [np.ones((1, CONTEXTS - 1, 4))], [np.ones(1)], [np.ones((2, 2, 2, 2))]):
        with pytest.raises(ValueError, match="positive integers of shape"):
            Priors(bad)
    with pytest.raises(ValueError, match="disagree on the number of table sets"):
        Priors([np.ones((2, CONTEXTS, 4)), np.ones(4)])


def test_priors_from_counts_mix_each_context_with_its_sets_marginal() -> None:
    counts = np.zeros((CONTEXTS, 2))
    counts[0] = [300, 100]
    counts[3] = [0, 400]
    (table,) = Priors.from_counts([counts]).tables
    assert table.shape == (1, CONTEXTS, 2)
    totals = table.sum(-1)
    assert (totals >= INIT_TOTAL - 2).all() and (totals <= INIT_TOTAL).all()
    assert table[0, 1].tolist() == [768, 1279]  # unseen: the marginal 3:5, floor(p * 2046) + 1
    assert 0 < table[0, 3, 0] / totals[0, 3] < 0.02  # seen 400 times, never symbol 0: rare, not impossible
    assert table[0, 0, 0] / totals[0, 0] == pytest.approx((300 + 16 * 0.375) / 416, abs=1e-3)
    # (K,) and (sets, C, K) tallies; an all-zero tally gives a flat table.
    assert Priors.from_counts([np.array([0, 0, 0, 0])]).tables[0].tolist() == [[[512] * 4] * CONTEXTS]
    stacked = Priors.from_counts([np.stack([counts, counts[::-1]])])
    assert stacked.sets == 2
    assert np.array_equal(stacked.tables[0][0], table[0])
    assert np.array_equal(stacked.tables[0][1, 7], table[0, 0])


def _uint8(crops) -> list[np.ndarray]:
    return [((c.permute(1, 2, 0).numpy() + 0.5) * 255).round().astype(np.uint8) for c in crops]


def test_finalize_writes_ladder_and_saving_to_the_card(tiny_model: CodecModel, tmp_path: Path) -> None:
    tuned = tune.finalize(tiny_model, [DATA / "bsds"], [DATA / "bsds"], crops=8, crop=64, val_images=4, val_size=64)
    rungs = codec.ladder(tuned)
    assert len(rungs) == 8
    assert tuned.priors.sets == 8  # one table set per rung
    walks = [(r.layers, r.lam) for r in rungs]  # a detail rung codes its walk with that walk's first rung's set
    assert [codec.table_set(tuned, r) for r in rungs] == [walks.index(w) for w in walks]
    points = tuned.card["ladder_on_val"]
    assert [p["bpp"] for p in points] == sorted(p["bpp"] for p in points)
    assert tuned.card["entropy_coding"]["saving_percent"] > 0
    path = tmp_path / "tuned.safetensors"
    tuned.save(path)
    assert codec.ladder(codec.load_model(path)) == rungs
    with pytest.raises(ModelError, match="ladder"):
        CodecModel(tiny_model.network, tiny_model.priors, ladder=[[99, 0]] * 8)
