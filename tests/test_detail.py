"""The detail layer: exact transforms, a lossless level coder, files that carry it, and
every way such a file can be broken."""

from __future__ import annotations

import binascii
import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from ddncodec import codec, container, detail
from ddncodec import levels as levels_coding
from ddncodec.codec import Rung, rate
from ddncodec.container import CorruptError, Header
from ddncodec.errors import FormatError, ModelError
from ddncodec.modelfile import CodecModel

FINGERPRINT = bytes.fromhex("f6d48267")


def pixels_of(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def test_the_transform_is_orthonormal_and_inverts_exactly() -> None:
    residual = np.random.default_rng(0).normal(0, 20, (37, 45, 3))  # not whole blocks: padded, then cropped
    coefficients = detail.forward(residual)
    assert coefficients.shape == (3, 5, 6, 64)
    assert np.abs(detail.inverse(coefficients, 37, 45) - residual).max() < 1e-9
    # Orthonormal: the quantiser's squared error is the pixels' squared error.
    assert (coefficients**2).sum() == pytest.approx((residual**2).sum(), rel=1e-12)


def test_the_dead_zone_sends_small_coefficients_to_zero() -> None:
    """A level k > 0 needs |c| / step >= k - 0.5 + DEAD_ZONE, not k - 0.5 as rounding would."""
    edge = 0.5 + detail.DEAD_ZONE  # in steps
    values = np.array([0.0, edge - 0.01, edge + 0.01, -(edge + 0.01), 1 + edge - 0.01, 1 + edge + 0.01, 0.49])
    assert detail.quantise(10 * values, 10).tolist() == [0, 0, 1, -1, 1, 2, 0]


def test_optimise_and_truncate_trade_error_for_bits_at_a_lower_total_cost() -> None:
    """On a photo-like residual (Laplacian, larger at low frequencies), each rate-distortion
    choice (the levels, then where each block ends) spends fewer coded bytes than the step
    before, each level stays rounding, one below it or zero, and error plus RATE_WEIGHT per
    bit goes down (as written: 25,312 -> 24,064 -> 20,608 bits)."""
    rng = np.random.default_rng(3)
    scale = 30 / (1 + np.arange(64) / 4)
    coefficients = rng.laplace(0, 1, (3, 12, 16, 64)) * scale
    step = 20
    plain = detail.quantise(coefficients, step)
    chosen = detail.optimise(coefficients, plain, step)
    ended = detail.truncate(coefficients, chosen, step, *levels_coding.summarised_lengths(plain, step), None)
    rounded = np.round(np.abs(coefficients) / step)
    for levels in (chosen, ended):
        magnitude = np.abs(levels)
        assert ((magnitude == rounded) | (magnitude == rounded - 1) | (magnitude == 0)).all()
        assert (np.sign(levels) * np.sign(coefficients) >= 0).all()
    assert ((ended == chosen) | (ended == 0)).all()  # truncating only zeroes

    def error(levels: np.ndarray) -> float:
        return float(((coefficients / step - levels) ** 2).sum())

    def bits(levels: np.ndarray) -> int:
        return 8 * len(levels_coding.encode(levels, step))

    for before, after in ((plain, chosen), (chosen, ended)):
        assert bits(after) < 0.97 * bits(before)
        assert error(after) > error(before)  # it is a trade, not a free lunch
        assert error(after) + detail.RATE_WEIGHT * bits(after) < error(before) + detail.RATE_WEIGHT * bits(before)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.int64,
        st.tuples(st.just(3), st.integers(1, 4), st.integers(1, 5), st.just(64)),
        elements=st.integers(-40, 40),
    )
)
def test_any_levels_round_trip_through_the_coder(levels: np.ndarray) -> None:
    rows, cols = levels.shape[1:3]
    assert np.array_equal(levels_coding.decode(levels_coding.encode(levels, 20), 8 * rows, 8 * cols, 20), levels)


def test_levels_beyond_the_alphabet_escape_and_round_trip() -> None:
    levels = np.zeros((3, 2, 3, 64), dtype=np.int64)
    levels[0, 0, 0, 0] = 3533  # the largest a step of 1 can give (a white block's DC in the luma channel)
    levels[1, 1, 2, 5] = -16
    levels[2, 0, 1, 63] = 15
    assert np.array_equal(levels_coding.decode(levels_coding.encode(levels, 1), 16, 24, 1), levels)


def test_a_flat_residual_costs_next_to_nothing() -> None:
    """Adaptive counts: the 1.2 M zero levels of a 768x512 image take under 1,200 bytes
    (985 as written), 0.008 bits each, against 1 bit for a static zero flag."""
    assert len(levels_coding.encode(np.zeros((3, 64, 96, 64), dtype=np.int64), 66)) < 1200


def test_the_surface_through_the_dcs_predicts_a_ramps_low_frequencies() -> None:
    """A gray ramp, 3 levels a pixel across and 1 down: the DCs around a block fix its
    slopes (within 5 % of its own coefficients) and its zero curvature; a gray residual has
    no chroma, and a block whose neighbours are all unknown predicts nothing."""
    y, x = np.mgrid[0:40, 0:40].astype(np.float64)
    residual = np.repeat((3 * x + y)[..., None], 3, axis=2)
    coefficients = detail.forward(residual)
    dc_levels = np.round(detail.block_dcs(residual)).astype(detail.LEVEL)
    assert np.abs(dc_levels - coefficients[..., 0]).max() <= 0.5  # the shortcut's DCs are the transform's
    predicted = detail.band_surface(dc_levels, 1, slice(0, 5))
    centre, truth = predicted[0, 2, 2], coefficients[0, 2, 2]
    assert abs(truth[1]) > 50 and abs(truth[8]) > 15
    for frequency in (1, 8):  # across, down
        assert centre[frequency] == pytest.approx(truth[frequency], rel=0.05)
    assert abs(centre[2]) < 0.5 and abs(centre[16]) < 0.5 and abs(centre[9]) < 0.5
    assert np.abs(predicted[1:]).max() < 1e-9
    # At the image's edge the missing side counts as the block itself: half the slope.
    assert predicted[0, 2, 0, 1] == pytest.approx(truth[1] / 2, rel=0.05)
    smooth = np.ones((5, 5), dtype=bool)
    smooth[2, 2] = False  # one block among smooth ones: nothing around it is known
    assert not detail.band_surface(dc_levels, 1, slice(0, 5), smooth).any()


def test_a_file_whose_bands_are_split_by_smooth_ones_decodes_as_coded_on_any_threads(
    tiny_model: CodecModel, kodak_crop: Path
) -> None:
    """The decoder adds a band of block rows once the next one is read (its low frequencies
    read the DCs below it); a band of smooth blocks alone is never read. 208 rows: a band
    of photo, a flat one, then two more of photo."""
    photo = pixels_of(kodak_crop)
    pixels = np.concatenate([photo[:64], np.full((64, photo.shape[1], 3), (200, 30, 40), np.uint8), photo[:80]])
    coder = tiny_model.replace(ladder=[[3, 0.0, 12]] * 8)
    result = codec.encode(Image.fromarray(pixels), coder, 8)
    assert container.unpack(result.data).header.predicted
    layer = codec.read_detail(container.unpack(result.data))
    assert layer is not None and layer.planes.smooth[8:16].all() and not layer.planes.smooth[:8].all()
    for threads in (1, 2):
        decoded, _ = codec.decode_pixels(result.data, tiny_model, threads=threads)
        assert np.array_equal(decoded, result.pixels)
    assert np.array_equal(result.pixels[64:128], pixels[64:128])


def test_a_detail_rung_refines_the_same_walk_and_its_file_decodes_exactly(
    tiny_model: CodecModel, kodak_crop: Path, no_colour_correction: None
) -> None:
    original = pixels_of(kodak_crop)
    base = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0))
    fine = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0, 6))
    coarse = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0, 40))
    assert not container.unpack(base.data).header.detail_step and container.unpack(fine.data).header.predicted
    assert fine.data[3] == coarse.data[3] == container.DC_SIGNS_VERSION  # with or without colour corrections
    # More bits, more PSNR: the tiny model's 3 layers reach about 22 dB, a step of 6 about 40.
    assert base.bpp < coarse.bpp < fine.bpp
    assert base.psnr + 1 < coarse.psnr < fine.psnr
    assert fine.psnr > 38
    for result in (fine, coarse):
        pixels, mode = codec.decode_pixels(result.data, tiny_model)
        assert mode == "RGB" and np.array_equal(pixels, result.pixels)
        assert result.psnr == pytest.approx(codec.psnr(pixels, original, "RGB"))
    # The file without its detail stream is a prefix: the same walk's image.
    header = container.unpack(fine.data).header
    cut = fine.data[: len(fine.data) - header.detail_length - container.LAYER_CRC_BYTES]
    assert np.array_equal(codec.decode_pixels(cut, tiny_model)[0], base.pixels)
    assert np.array_equal(codec.decode_pixels(fine.data, tiny_model, layers=3)[0], fine.pixels)
    assert np.array_equal(
        codec.decode_pixels(fine.data, tiny_model, layers=2)[0],
        codec.encode_pixels(original, "RGB", tiny_model, Rung(2, 0.0)).pixels,
    )


def test_a_gray_image_codes_no_chroma(tiny_model: CodecModel, kodak_crop: Path) -> None:
    gray = Image.open(kodak_crop).convert("L")
    result = codec.encode(gray, tiny_model.replace(ladder=[[3, 0.0, 8]] * 8), 5)
    image = codec.decode(result.data, tiny_model)
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image), np.asarray(result.image()))
    assert (
        codec.psnr(np.repeat(np.asarray(image)[..., None], 3, 2), np.repeat(np.asarray(gray)[..., None], 3, 2), "L")
        > 38
    )
    colour = codec.encode(kodak_crop, tiny_model.replace(ladder=[[3, 0.0, 8]] * 8), 5)
    assert result.bpp < 0.8 * colour.bpp


def test_a_bpp_search_above_the_plain_rungs_searches_the_detail_step(tiny_model: CodecModel, kodak_crop: Path) -> None:
    ladder = [[1, 0.0]] * 4 + [[3, 0.0], [3, 0.0, 40], [3, 0.0, 16], [3, 0.0, 6]]
    card = {**tiny_model.card, "ladder_on_val": [{"bpp": b} for b in (0.1, 0.1, 0.1, 0.1, 0.5, 1.0, 2.0, 4.0)]}
    model = tiny_model.replace(ladder=ladder, card=card)
    for target in (1.5, 3.0):
        result = codec.encode(kodak_crop, model, bpp=target)
        assert codec.reached(result, target)
        assert result.rung.layers == 3 and result.rung.detail > 0
        assert np.array_equal(codec.decode_pixels(result.data, model)[0], result.pixels)
    low = codec.encode(kodak_crop, model, bpp=0.05)  # below what any detail step costs: the plain rungs
    assert low.rung.detail == 0


def test_a_bpp_search_under_the_coarsest_detail_step_and_past_the_plain_rungs_walks_deeper(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between what the one plain rung reaches at λ = 0 (2 layers: 0.031 bpp) and the first
    detail rung's coarsest step (about 0.14 bpp), as model version 13's q1 and q2: λ along a
    walk DEEPER times as deep (here all 3 layers) reaches the target, where the plain rung
    alone falls short."""
    ladder = [[2, 1000.0]] + [[2, 0.0, step] for step in (255, 120, 80, 40, 20, 10, 5)]
    card = {**tiny_model.card, "ladder_on_val": [{"bpp": b} for b in (0.02, 0.15, 0.29, 0.4, 0.8, 1.6, 3.0, 5.0)]}
    model = tiny_model.replace(ladder=ladder, card=card)
    found = codec.encode(kodak_crop, model, bpp=0.06)
    assert codec.reached(found, 0.06), found.bpp
    assert (found.rung.layers, found.rung.detail) == (3, 0)
    monkeypatch.setattr(rate, "DEEPER", 1)
    short = codec.encode(kodak_crop, model, bpp=0.06)
    assert short.rung.layers == 2 and short.bpp < 0.6 * 0.06


def test_a_bpp_search_under_a_ladder_of_detail_rungs_alone_walks_their_walk_plain(
    tiny_model: CodecModel, kodak_crop: Path
) -> None:
    """Under the coarsest step of a ladder without a plain rung (2 layers: 0.031 bpp at
    λ = 0, the detail layer far above), the first detail rung's walk is searched along λ."""
    model = tiny_model.replace(ladder=[[2, 0.0, step] for step in (255, 200, 120, 80, 40, 20, 10, 5)])
    found = codec.encode(kodak_crop, model, bpp=0.02)  # the tiny model's rate moves in jumps along λ
    assert 0.02 / 1.5 < found.bpp < 0.02 * 1.5 and found.rung.detail == 0, (found.bpp, found.rung)
    assert np.array_equal(codec.decode_pixels(found.data, model)[0], found.pixels)


def test_ladders_with_detail_steps_load_and_bad_steps_are_refused(tiny_model: CodecModel) -> None:
    assert tiny_model.replace(ladder=[[3, 0.0, 20]] * 8).ladder[0] == Rung(3, 0.0, 20)
    for bad in ([[3, 0.0, 256]] * 8, [[3, 0.0, -1]] * 8, [[3, 0.0, 2.5]] * 8, [[3, 0.0, 1, 1]] * 8):
        with pytest.raises(ModelError, match="ladder"):
            tiny_model.replace(ladder=bad)


def make(
    step: int = 20, details: bytes = b"\x55" * 300, streams: tuple[bytes, ...] = (b"\x11" * 9, b"\x22" * 30)
) -> bytes:
    header = Header(FINGERPRINT, 64, 48, "RGB", 0, tuple(map(len, streams)), False, step, len(details))
    return container.pack(header, streams, details)


def test_the_container_carries_the_detail_stream_after_the_layers() -> None:
    data = make()
    parsed = container.unpack(data)
    assert data[3] == container.ROWS_DETAIL_VERSION
    assert parsed.header.detail_step == 20 and parsed.detail == b"\x55" * 300 and parsed.complete
    # Cut after the last layer: a valid prefix without the detail; cut inside it: refused.
    layers_only = container.unpack(data[: -300 - 4])
    assert layers_only.detail is None and layers_only.complete
    for cut in (1, 4, 5, 200):
        with pytest.raises(CorruptError, match="truncated"):
            container.unpack(data[:-cut])
    for bit in range(8 * (len(data) - 304), 8 * len(data)):  # every flip in the detail stream or its CRC
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptError, match="checksum mismatch in the detail stream"):
            container.unpack(bytes(flipped))


def test_detail_headers_that_do_not_hold_together_are_refused() -> None:
    with pytest.raises(ValueError, match="step 256"):
        make(step=256)
    with pytest.raises(ValueError, match="step 0"):
        container.pack(Header(FINGERPRINT, 64, 48, "RGB", 0, (1,), False, 0, 3), [b"\x00"], b"abc")
    plain = container.pack(Header(FINGERPRINT, 64, 48, "RGB", 0, (1,)), [b"\x00"])
    assert plain[3] == 2
    # The detail flag in a version-2 file is an unknown mode, a version-3 file without it is corrupt.
    with pytest.raises(CorruptError, match="unknown mode 64"):
        container.unpack(_reheadered(plain, version=2, mode_byte=0x40))
    with pytest.raises(CorruptError, match="version 3 file without a detail stream"):
        container.unpack(_reheadered(plain, version=3, mode_byte=0))
    with pytest.raises(CorruptError, match="version 4 file without a detail stream"):
        container.unpack(_reheadered(plain, version=4, mode_byte=0))
    with pytest.raises(CorruptError, match="version 5 file without a detail stream"):
        container.unpack(_reheadered(plain, version=5, mode_byte=0x20))


def _reheadered(data: bytes, version: int, mode_byte: int) -> bytes:
    """``data`` (a one-layer plain file of 64x48) with its version and mode byte set, CRCs recomputed."""
    head = bytearray(data[:3] + bytes([version]) + data[4:10] + bytes([mode_byte]) + data[11:14])
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    body = bytearray(head) + b"\x00"
    return bytes(body + struct.pack(">I", zlib.crc32(bytes(body))))


def test_a_detail_stream_of_garbage_with_valid_checksums_is_refused_cleanly(
    tiny_model: CodecModel, kodak_crop: Path
) -> None:
    """An empty stream is refused; any other decodes to some image or is refused (it cannot
    hang: the decoder stops a stream that yields more information than its bytes hold)."""
    result = codec.encode_pixels(pixels_of(kodak_crop), "RGB", tiny_model, Rung(3, 0.0, 10))
    parsed = container.unpack(result.data)

    def forged(garbage: bytes) -> bytes:
        header = dataclasses.replace(parsed.header, detail_length=len(garbage))
        return container.pack(header, parsed.streams, garbage)

    with pytest.raises(FormatError, match="corrupt detail stream"):
        codec.decode_pixels(forged(b""), tiny_model)
    rng = np.random.default_rng(1)
    for garbage in (b"\x00" * 4, b"\xff" * 64, rng.bytes(512), rng.bytes(4000)):
        try:
            pixels, _ = codec.decode_pixels(forged(garbage), tiny_model)
        except FormatError as exc:
            assert "corrupt detail stream" in str(exc)
        else:
            assert pixels.shape == (192, 256, 3)
