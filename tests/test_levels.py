"""The detail levels' coder of format version 8 on (``levels.Layout.SUMMARISED``): each block's
last band first, trained first counts; version 11's escapes by bit length
(``levels.Layout.DC_SIGNS``); the row layout of versions 5 and 6 still reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddncodec import entropy, levels
from ddncodec.errors import FormatError

REAL = Path(__file__).parent / "data" / "kodak" / "levels_q5.npz"  # the default model's q5 levels of the two crops
STEP = 66  # q5's detail step: the coarse steps' first counts (format version 11)


def _written(values: np.ndarray, layout: levels.Layout, skip: np.ndarray | None = None) -> bytes:
    writer = entropy.Writer()
    counts = levels._Counts.first(layout, STEP)
    levels._run(values.astype(levels.LEVEL), layout, levels._Writing(writer), counts, skip, complete=True)
    return writer.finish()


def _banded(data: bytes, shape: tuple[int, ...], layout: levels.Layout, skip: np.ndarray | None) -> np.ndarray:
    whole = np.zeros(shape, dtype=levels.LEVEL)
    reader = levels.read_bands(
        entropy.Decoder(data, "detail stream"), 8 * shape[1], 8 * shape[2], 3, STEP, skip, layout
    )
    for band, band_levels in reader:
        whole[:, band] = band_levels
    return whole


def test_real_levels_cost_less_than_in_the_row_layout_and_decode_band_by_band() -> None:
    with np.load(REAL) as real:
        crops = {name: real[name] for name in real.files}
    for name, values in crops.items():
        summarised, rows = _written(values, levels.Layout.SUMMARISED), _written(values, levels.Layout.ROWS)
        assert len(summarised) < 0.95 * len(rows), (name, len(summarised), len(rows))  # 6,240 / 6,696 and 2,320 / 2,776
        for data, layout in ((summarised, levels.Layout.SUMMARISED), (rows, levels.Layout.ROWS)):
            assert np.array_equal(_banded(data, values.shape, layout, None), values)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 7), st.floats(0.0, 1.0))
def test_sparse_levels_with_smooth_blocks_round_trip_band_by_band(seed: int, rows: int, cols: int, busy: float) -> None:
    """Blocks that end in any band, smooth blocks left out: both row layouts, read in bands of 3 block rows."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.laplace(0, 2, (3, rows, cols, 64))).astype(np.int64)
    values[rng.random(values.shape) > busy * 0.3] = 0
    last = rng.integers(0, levels.LASTS, (3, rows, cols))
    values[levels.BAND_OF[None, None, None, :] >= last[..., None]] = 0
    skip = rng.random((rows, cols)) < 0.3
    values[:, skip] = 0
    for layout in (levels.Layout.SUMMARISED, levels.Layout.ROWS):
        assert np.array_equal(_banded(_written(values, layout, skip), values.shape, layout, skip), values)
    assert np.array_equal(levels.last_bands(values), np.where(values != 0, levels.BAND_OF + 1, 0).max(-1))


def test_empty_blocks_cost_a_last_band_each() -> None:
    """1.2 M zero levels of a 768x512 image: 27 bytes as written (985 in the row layout)."""
    zeros = np.zeros((3, 64, 96, 64), dtype=np.int64)
    assert len(levels.encode(zeros, STEP)) < 40 < 900 < len(_written(zeros, levels.Layout.ROWS))


def test_a_stream_cut_short_fails_as_corrupt() -> None:
    with np.load(REAL) as real:
        values = real["kodim05_crop"]
    data = levels.encode(values, STEP)
    try:
        decoded = levels.decode(data[: len(data) // 2], 8 * values.shape[1], 8 * values.shape[2], STEP)
    except FormatError as error:
        assert "detail stream" in str(error) or "corrupt" in str(error)
    else:
        assert not np.array_equal(decoded, values)


@pytest.mark.parametrize(
    ("path", "classes", "floor", "digest"),
    [
        (levels.PRIORS, levels.SUMMARISED_CLASSES, 4, "84b0ba9c962fdab0"),  # format version 8
        (levels.PRIORS_11, levels.SIGNED_SUMMARISED_CLASSES, 2, "4fe4e8e7a2a743b8"),  # format version 11
    ],
)
def test_the_trained_first_counts_are_the_format_versions(path: Path, classes: int, floor: int, digest: str) -> None:
    """Part of their format version: any change to a table must come with a new format version."""
    with np.load(path) as priors:
        level_counts, last_counts = priors["levels"], priors["lasts"]
    tables = level_counts.shape[:-2]  # version 11: one for the coarse steps, one for the fine
    assert tables == last_counts.shape[:-2] == (() if path == levels.PRIORS else (2,))
    assert level_counts.shape[-2:] == (classes, levels.SYMBOLS)
    assert last_counts.shape[-2:] == (levels.SUMMARY_CLASSES, levels.LASTS)
    assert (level_counts >= floor).all() and (last_counts >= floor).all()
    found = hashlib.sha256(level_counts.astype("<i8").tobytes() + last_counts.astype("<i8").tobytes())
    assert found.hexdigest()[:16] == digest


def test_levels_under_a_left_out_block_are_refused() -> None:
    """A smooth block's levels are not coded: nonzero ones would be context the decoder never sees."""
    values = np.zeros((3, 2, 2, 64), dtype=np.int64)
    values[0, 1, 1, 0] = 1
    skip = np.zeros((2, 2), dtype=bool)
    skip[1, 1] = True
    with pytest.raises(ValueError, match="must be zero"):
        levels.write(values, entropy.Writer(), STEP, skip)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_vectorised_classes_are_the_coders(seed: int) -> None:
    """``tallies`` (what the RDO prices with and the first counts are trained on) counts
    exactly the classes the coder meets group by group: with counts that start at 1, a
    writer's adapted counts are 1 + 32 x the tallies (no class passes the halving total)."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.laplace(0, 1.5, (3, 5, 6, 64))).astype(np.int64)
    values[rng.random(values.shape) > 0.2] = 0
    skip = rng.random((5, 6)) < 0.2
    values[rng.random(values.shape) < 0.01] = levels.LARGEST + 1  # escapes: a symbol of their own class
    values[:, skip] = 0
    for layout, kinds in (
        (levels.Layout.SUMMARISED, levels.SUMMARISED_CLASSES),
        (levels.Layout.DC_SIGNS, levels.SIGNED_SUMMARISED_CLASSES),
    ):
        signed = layout is levels.Layout.DC_SIGNS
        counts = levels._Counts(
            np.ones((kinds, levels.SYMBOLS), np.int64),
            np.ones((levels.SUMMARY_CLASSES, levels.LASTS), np.int64),
            levels.INITIAL_ESCAPES[None].copy() if signed else None,
        )
        levels._run(values.astype(levels.LEVEL), layout, levels._Writing(entropy.Writer()), counts, skip, complete=True)
        level_tally, last_tally = levels.tallies(values, skip, signed)
        assert np.array_equal(counts.levels, 1 + levels.COUNT_INCREMENT * level_tally)
        assert np.array_equal(counts.lasts, 1 + levels.COUNT_INCREMENT * last_tally)


def _escaping(seed: int, shape: tuple[int, ...] = (3, 12, 16, 64)) -> np.ndarray:
    """Levels of a fine step: Laplacian, the 40 lowest frequencies, about one in six beyond LARGEST."""
    values = np.round(np.random.default_rng(seed).laplace(0, 9, shape)).astype(np.int64)
    values[..., 40:] = 0
    return values


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 6))
def test_escapes_by_bit_length_round_trip_band_by_band(seed: int, rows: int, cols: int) -> None:
    """Any escape, up to the largest bit length (excess 2^14 - 1), with smooth blocks left out."""
    rng = np.random.default_rng(seed)
    values = _escaping(seed, (3, rows, cols, 64))
    values[rng.random(values.shape) < 0.01] = rng.choice([-1, 1]) * (levels.LARGEST + 2**14 - 1)
    values[rng.random(values.shape) < 0.01] = rng.choice([-1, 1]) * (levels.LARGEST + 1)
    skip = rng.random((rows, cols)) < 0.2
    values[:, skip] = 0
    layout = levels.Layout.DC_SIGNS
    assert np.array_equal(_banded(_written(values, layout, skip), values.shape, layout, skip), values)


def test_escapes_by_bit_length_cost_about_5_bits_against_14_and_the_encoder_prices_them_so() -> None:
    """The same levels in version 8's layout (a uniform 14-bit payload per escape) and 11's:
    at least 7 bits less per escape; ``escape_bits``, the RDO's price, is the mean under
    the counts the image's own escapes give: one escape of excess 1 costs its bit length
    (0, counts 64 + 32 of 616 + 32) and its sign."""
    values = _escaping(0)
    escapes = int((np.abs(values) > levels.LARGEST).sum())
    assert 3000 < escapes < 6000
    uniform, by_length = _written(values, levels.Layout.SUMMARISED), levels.encode(values, STEP)
    assert 8 * (len(uniform) - len(by_length)) > 7 * escapes
    assert np.array_equal(levels.decode(by_length, 8 * 12, 8 * 16, STEP), values)
    assert 4 < levels.escape_bits(values) < 7
    one = np.zeros((3, 1, 1, 64), dtype=np.int64)
    one[0, 0, 0, 3] = -(levels.LARGEST + 1)
    assert levels.escape_bits(one) == pytest.approx(np.log2(648 / 96) + 1)
    assert levels.escape_bits(np.clip(values, -levels.LARGEST, levels.LARGEST)) == 0


def test_a_dc_takes_a_leaning_class_where_the_dcs_around_it_lean_one_way() -> None:
    """Version 11: a DC whose known neighbours' DC signs sum above or below 0 takes a class of
    its own (the same tone and neighbourhood); every other coefficient keeps version 8's class.
    A walk too dark over one half of a photo and too bright over the other leaves DCs of one
    sign across each: version 11 codes them in fewer bytes than version 8."""
    values = np.zeros((3, 2, 4, 64), dtype=np.int64)
    values[0, 0, :, 0] = (5, -5, 5, 0)
    plain, signed = levels.classes_of(values, None, signed=False), levels.classes_of(values, None)
    assert np.array_equal(plain[..., 1:], signed[..., 1:]) and np.array_equal(plain[1:], signed[1:])
    # Row 1, even columns read the three DCs above: block 0 sees (0, 5, -5) -> 0, block 2 sees (-5, 5, 0) -> 0;
    # odd columns add left and right: block 1 sees 5 - 5 + 5 + 0 + 0 = 5 > 0, block 3 sees 5 + 0 + 0 = 5 > 0.
    leaning = signed[0, 1, :, 0] >= levels.CLASSES
    assert leaning.tolist() == [False, True, False, True]
    assert ((signed[0, 1, leaning, 0] - levels.CLASSES) // levels.NEIGHBOURHOOD == 0).all()  # positive, luma
    assert np.array_equal(signed[0, 1, ~leaning, 0], plain[0, 1, ~leaning, 0])
    rng = np.random.default_rng(1)
    dark = np.zeros((3, 24, 32, 64), dtype=np.int64)
    dark[..., 0] = np.ceil(np.abs(rng.laplace(0, 2, (3, 24, 32)))) * np.where(
        np.arange(32) < 16, 1, -1
    )  # a sign each half
    assert len(levels.encode(dark, STEP)) < 0.8 * len(_written(dark, levels.Layout.SUMMARISED))  # 858 B against 1,141


def test_the_detail_step_picks_version_11s_first_counts() -> None:
    """A stream of a step under FINE_STEP starts from the fine steps' table, any other from the
    coarse steps': the same levels code to other bytes, fewer from the table of their kind,
    and decode right only under a step of the same kind."""
    values = _escaping(2)  # a fine step's levels
    fine, coarse = levels.encode(values, levels.FINE_STEP - 1), levels.encode(values, levels.FINE_STEP)
    assert levels.encode(values, 8) == fine and levels.encode(values, 255) == coarse
    assert len(fine) < len(coarse)
    assert np.array_equal(levels.decode(fine, 8 * 12, 8 * 16, 8), values)
    try:
        misread = levels.decode(fine, 8 * 12, 8 * 16, 255)
    except FormatError:
        return
    assert not np.array_equal(misread, values)
