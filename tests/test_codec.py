"""The data path: exact replay, progressive prefixes, rate control, image modes, bad input."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from ddncodec import codec, container, entropy, imageio
from ddncodec.codec import Rung, encoder, tiles
from ddncodec.data import to_tensor
from ddncodec.errors import FormatError, InputError, ModelError
from ddncodec.ladder import fallback as fallback_ladder
from ddncodec.modelfile import CodecModel, load
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.priors import Priors

KODAK = Path(__file__).parent / "data" / "kodak"


def pixels_of(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def test_decode_replays_the_encoders_reconstruction_exactly(tiny_model: CodecModel, kodak_crop: Path) -> None:
    for quality in (1, 5, 8):
        result = codec.encode(kodak_crop, tiny_model, quality)
        pixels, mode = codec.decode_pixels(result.data, tiny_model)
        assert mode == "RGB"
        assert np.array_equal(pixels, result.pixels)
        assert result.psnr == pytest.approx(codec.psnr(pixels, pixels_of(kodak_crop), "RGB"))
        assert result.bpp == 8 * len(result.data) / (256 * 192)


def test_decode_is_identical_across_thread_counts(tiny_model: CodecModel, kodak_crop: Path) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = codec.encode(kodak_crop, tiny_model, layers=3)
        torch.set_num_threads(2)
        pixels, _ = codec.decode_pixels(result.data, tiny_model)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(pixels, result.pixels)


def layer_ends(data: bytes) -> list[int]:
    """The file lengths at which each layer's stream and its CRC end."""
    header, start = container.parse_header(data)
    ends, pos = [], start
    for length in header.lengths:
        pos += length + container.LAYER_CRC_BYTES
        ends.append(pos)
    assert pos == len(data)
    return ends


def test_tiles_and_prefixes(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch, no_colour_correction: None
) -> None:
    """With 64 px tiles the 256x192 crop is 12 tiles: they decode to the encoder's
    reconstruction, and every layer prefix of the stream decodes."""
    monkeypatch.setattr(tiles, "TILE", 64)
    assert len(codec.plan(256, 192, tiny_model.config.unit)) == 12
    result = codec.encode(kodak_crop, tiny_model, layers=3)
    assert np.array_equal(codec.decode_pixels(result.data, tiny_model)[0], result.pixels)
    ends = layer_ends(result.data)
    for layers in (1, 2):
        coarse = codec.encode(kodak_crop, tiny_model, layers=layers).pixels
        cut = result.data[: ends[layers - 1]]
        assert not container.unpack(cut).complete
        assert np.array_equal(codec.decode_pixels(cut, tiny_model)[0], coarse)
        assert np.array_equal(codec.decode_pixels(result.data, tiny_model, layers)[0], coarse)


def test_plan_covers_the_image_with_unit_aligned_tiles() -> None:
    for width, height in [(1, 1), (1024, 1024), (1025, 7), (3000, 2000), (6000, 4000)]:
        tiles = codec.plan(width, height, 32)
        covered = np.zeros((height, width), dtype=np.int8)
        for t in tiles:
            covered[t.top : t.top + t.height, t.left : t.left + t.width] += 1
            assert max(t.padded) <= codec.TILE
            assert t.padded[0] % 32 == 0
            assert t.padded[1] % 32 == 0
        assert (covered == 1).all()
    assert len(codec.plan(6000, 4000, 32)) == 6 * 4


def test_more_layers_cost_more_bits_and_give_more_psnr(tiny_model: CodecModel, kodak_crop: Path) -> None:
    results = [codec.encode(kodak_crop, tiny_model, layers=n) for n in (1, 2, 3)]
    assert [len(r.data) for r in results] == sorted(len(r.data) for r in results)
    assert results[0].psnr + 1 < results[1].psnr < results[2].psnr


def test_rate_aware_choice_trades_psnr_for_bits(tiny_model: CodecModel, kodak_crop: Path) -> None:
    pixels = pixels_of(kodak_crop)
    plain, cheap = (codec.encode_pixels(pixels, "RGB", tiny_model, Rung(3, lam)) for lam in (0.0, 10000.0))
    assert len(cheap.data) < 0.9 * len(plain.data)
    assert cheap.psnr < plain.psnr


def test_settle_lowers_the_layers_price_with_neighbours_known() -> None:
    """Iterated conditional modes never raise SSE + λ·bits under the static context model
    (each class of cells is priced exactly, its neighbours held), and on a keep-heavy
    table it finds cheaper layers than the per-cell draft; cells only keep or refine."""
    from ddncodec.context import CONTEXTS, code_lengths, static_lengths

    rng = np.random.default_rng(5)
    k, shape = 8, (2, 17, 23)
    table = rng.integers(1, 50, (CONTEXTS, k))
    table[:, 0] = 10 + 400 * np.arange(CONTEXTS) // 2  # keep gets cheaper with every keeping neighbour
    lengths = static_lengths(table)
    refine = rng.integers(1, k, shape)
    extra_sse = rng.normal(2.0, 3.0, shape)
    parent_kept = rng.integers(0, 2, shape)
    lam = np.array([1.0, 3.0])
    draft = np.where(extra_sse < 0, refine, 0)

    def price(grid: np.ndarray) -> np.ndarray:
        sse = np.where(grid > 0, extra_sse, 0.0).sum((1, 2))
        return sse + lam * code_lengths(grid, parent_kept, lengths).sum((1, 2))

    settled = codec.settle(draft, refine, extra_sse, parent_kept, lengths, lam)
    assert ((settled == 0) | (settled == refine)).all()
    assert (price(settled) < price(draft) - 1.0).all()


def test_effort_2_looks_ahead_for_more_psnr_at_the_same_rate(tiny_model: CodecModel) -> None:
    for path in sorted(KODAK.glob("*.png")):
        pixels = pixels_of(path)
        plain, ahead = (codec.encode_pixels(pixels, "RGB", tiny_model, Rung(3, 0.0), effort=e) for e in (1, 2))
        assert ahead.psnr > plain.psnr + 0.05  # measured: +0.08 and +0.26 dB
        assert len(ahead.data) < 1.03 * len(plain.data)
        replayed, _ = codec.decode_pixels(ahead.data, tiny_model)  # decoding needs no effort
        assert np.array_equal(replayed, ahead.pixels)


def decode_maps(data: bytes, model: CodecModel) -> tuple[codec.Grids, float]:
    """A file's index grids, as ``codec.decode_pixels`` reads them, and their ideal code
    length −Σ log2 p under the adaptive model."""
    maps = codec.read_maps(container.unpack(data), model)
    ideal = 0.0
    for layer, grids in enumerate(maps.grids):
        parents = codec.layer_parents(model.config, maps.grids, layer, [g.shape for g in grids])
        ideal += entropy.ideal_bits(grids, parents, model.priors.initial(layer, maps.table_set))
    return maps.grids, ideal


def test_code_length_within_one_percent_of_ideal(tiny_model: CodecModel) -> None:
    for path in sorted(KODAK.glob("*.png")):
        result = codec.encode(path, tiny_model, layers=3)
        parsed = container.unpack(result.data)
        maps, ideal = decode_maps(result.data, tiny_model)
        assert [m[0].shape for m in maps] == [(192 // s.cell, 256 // s.cell) for s in tiny_model.config.layers]
        coded = 8 * sum(parsed.header.lengths)
        assert ideal - 8 * len(parsed.streams) <= coded <= 1.01 * ideal


def test_decoding_the_index_maps_needs_the_integers_only(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coder's probabilities come from the integer tables and the symbols, never from
    the network's floats: a decoder whose weights differ by 1e-6 (another machine's float
    rounding, exaggerated) reads exactly the index maps the encoder wrote."""
    written: list[list[np.ndarray]] = []
    read: list[list[np.ndarray]] = []
    real_encode, real_decode = entropy.encode, entropy.decode

    def encode(grids, parents, initial):
        written.append([g.copy() for g in grids])
        return real_encode(grids, parents, initial)

    def decode(data, shapes, parents, initial):
        read.append(real_decode(data, shapes, parents, initial))
        return read[-1]

    monkeypatch.setattr(entropy, "encode", encode)
    monkeypatch.setattr(entropy, "decode", decode)
    monkeypatch.setattr(tiles, "TILE", 64)  # 12 tiles: the counts carry over tile boundaries too
    result = codec.encode(kodak_crop, tiny_model, 5)

    network = copy.deepcopy(tiny_model.network)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(1 + 1e-6 * torch.randn(p.shape, generator=generator).sign())
    perturbed = CodecModel(network, tiny_model.priors, tiny_model.card)
    assert perturbed.fingerprint != tiny_model.fingerprint
    perturbed.fingerprint = perturbed.core_fingerprint = tiny_model.fingerprint  # let the file past the model check
    pixels, _ = codec.decode_pixels(result.data, perturbed)

    assert len(written) == len(read) == result.rung.layers == len(container.unpack(result.data).streams)
    for layer, (wrote, got) in enumerate(zip(written, read, strict=True)):
        assert len(wrote) == len(got) == 12
        assert all(np.array_equal(w, g) for w, g in zip(wrote, got, strict=True)), layer
    # The perturbation is real: with the same choices, the float images differ (slightly).
    target = to_tensor(pixels_of(kodak_crop)[None, :64, :64])
    with torch.no_grad():
        maps = [m for m, _ in tiny_model.network.walk((1, 64, 64), codec.rate_aware(target, tiny_model, 0.0))]
        a, b = (list(n.walk((1, 64, 64), lambda layer, _o: maps[layer]))[-1][1] for n in (tiny_model.network, network))
    assert not torch.equal(a, b)
    assert torch.allclose(a, b, atol=1e-4)
    assert np.abs(pixels.astype(int) - result.pixels.astype(int)).max() <= 1


def test_bpp_target_is_met_within_ten_percent(tiny_model: CodecModel, kodak_crop: Path) -> None:
    """Targets between the plain 2- and 3-layer rates: 3 layers, λ brings them down."""
    two, three = (codec.encode(kodak_crop, tiny_model, layers=n).bpp for n in (2, 3))
    for target in (0.35 * two + 0.65 * three, 0.9 * three):
        result = codec.encode(kodak_crop, tiny_model, bpp=target)
        assert abs(result.bpp / target - 1) <= 0.1, (target, result.bpp)
        assert result.rung.layers == 3
        assert result.rung.lam > 0
    result = codec.encode(kodak_crop, tiny_model, bpp=two)
    assert abs(result.bpp / two - 1) <= 0.1
    assert result.rung.layers == 2


def test_a_bpp_search_just_under_a_rung_raises_its_lambda_without_walking_the_rung_below(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rung below would only bracket a target that λ reaches from the rung above."""
    two, three = (codec.encode(kodak_crop, tiny_model, layers=n).bpp for n in (2, 3))
    card = {**tiny_model.card, "ladder_on_val": [{"bpp": two}] * 7 + [{"bpp": three}]}
    laddered = tiny_model.replace(ladder=[[2, 0.0]] * 7 + [[3, 0.0]], card=card)
    walked: list[int] = []
    code = encoder.code
    monkeypatch.setattr(
        encoder, "code", lambda pixels, model, rung, *a: walked.append(rung.layers) or code(pixels, model, rung, *a)
    )
    target = 0.9 * three
    result = codec.encode(kodak_crop, laddered, bpp=target)
    assert codec.reached(result, target), (target, result.bpp)
    assert result.rung.layers == 3
    assert 2 not in walked, walked


def test_a_models_own_ladder_is_used(tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path) -> None:
    laddered = tiny_model.replace(ladder=[[1, 0.0]] * 7 + [[2, 500.0]])
    assert laddered.ladder[-1] == Rung(2, 500.0)
    assert codec.encode(kodak_crop, laddered, 8).rung == Rung(2, 500.0)
    assert codec.encode(kodak_crop, laddered, 8, layers=3).rung == Rung(3, 500.0)
    assert codec.ladder(tiny_model) == fallback_ladder(3)
    assert fallback_ladder(13)[-1] == Rung(13, 0.0)
    # The ladder is for encoding only: files of the laddered model decode with the plain one.
    assert laddered.fingerprint == tiny_model.fingerprint
    data = codec.encode(kodak_crop, laddered, 8).data
    assert codec.decode(data, tiny_model).size == (256, 192)
    path = tmp_path / "laddered.safetensors"
    laddered.save(path)
    assert load(path).ladder == laddered.ladder
    for bad in ([[1, 0.0]] * 7, [[4, 0.0]] * 8, [[1, -1.0]] * 8, [["x", 0]] * 8):
        with pytest.raises(ModelError, match="ladder"):
            tiny_model.replace(ladder=bad)


LADDER = [[1, 0.0], [1, 3000.0], [2, 10000.0], [2, 1000.0], [2, 0.0], [3, 3000.0], [3, 1000.0], [3, 0.0]]


def with_table_sets(model: CodecModel) -> CodecModel:
    """``model`` with LADDER and eight table sets: set i is set 0 with i added to every count."""
    tables = [np.stack([t[0] + i for i in range(8)]) for t in model.priors.tables]
    return model.replace(priors=Priors(tables), ladder=LADDER)


def test_each_rung_codes_with_its_own_table_set(tiny_model: CodecModel, kodak_crop: Path) -> None:
    model = with_table_sets(tiny_model)
    assert model.priors.sets == 8
    assert model.fingerprint != tiny_model.fingerprint
    for quality, rung in enumerate(codec.ladder(model), 1):
        assert codec.table_set(model, rung) == quality - 1
    result = codec.encode(kodak_crop, model, 6)
    assert container.unpack(result.data).header.table_set == 5
    assert np.array_equal(codec.decode_pixels(result.data, model)[0], result.pixels)
    # Off the ladder: the rung nearest in log(1 + λ), then in layers.
    assert codec.table_set(model, Rung(3, 900.0)) == 6
    assert codec.table_set(model, Rung(1, 1100.0)) == 3
    assert codec.table_set(model, Rung(2, 0.0)) == 4
    assert codec.table_set(model, Rung(3, 5e6)) == 2
    # The detail step picks no set: a detail rung on another rung's walk takes that rung's.
    on_q3 = model.replace(ladder=(*model.ladder[:7], Rung(2, 10000.0, 20)))
    assert codec.table_set(on_q3, on_q3.ladder[7]) == 2
    assert codec.table_set(on_q3, Rung(2, 10000.0, 90)) == 2
    # One set (or fewer sets than rungs): always set 0.
    assert {codec.table_set(tiny_model, r) for r in codec.ladder(tiny_model)} == {0}
    assert codec.table_set(model.replace(priors=Priors(t[:3] for t in model.priors.tables)), Rung(3, 0.0)) == 0


def relabelled(data: bytes, table_set: int) -> bytes:
    """``data`` with another table set in its header (checksums recomputed)."""
    parsed = container.unpack(data)
    header = dataclasses.replace(parsed.header, table_set=table_set)
    return container.pack(header, parsed.streams)


def test_the_header_table_set_decides_how_the_streams_decode(tiny_model: CodecModel, kodak_crop: Path) -> None:
    model = with_table_sets(tiny_model)
    result = codec.encode(kodak_crop, model, 8)
    assert container.unpack(result.data).header.table_set == 7
    assert relabelled(result.data, 7) == result.data
    try:
        other = codec.decode_pixels(relabelled(result.data, 0), model)[0]
    except FormatError:
        pass  # refused: the streams hold less information than set 0 reads from them
    else:
        assert not np.array_equal(other, result.pixels)
    with pytest.raises(FormatError, match="table set 8, the model has 8"):
        codec.decode(relabelled(result.data, 8), model)
    single = codec.encode(kodak_crop, tiny_model, 8).data
    with pytest.raises(FormatError, match="table set 1, the model has 1"):
        codec.decode(relabelled(single, 1), tiny_model)


def test_rate_aware_choice_prices_symbols_with_the_rungs_table_set(tiny_model: CodecModel, kodak_crop: Path) -> None:
    """Set 1 makes "keep" (symbol 0) a hundred times likelier: at the same λ, more cells keep."""
    tables = []
    for t in tiny_model.priors.tables:
        cheap_keep = t[0].copy()
        cheap_keep[:, 0] *= 100
        tables.append(np.stack([t[0], cheap_keep]))
    model = tiny_model.replace(priors=Priors(tables))
    assert model.priors.bits(0, 1)[0] < model.priors.bits(0, 0)[0] - 2
    target = to_tensor(pixels_of(kodak_crop)[None])
    keeps = []
    for tables_set in (0, 1):
        with torch.no_grad():
            walk = model.network.walk((1, 192, 256), codec.rate_aware(target, model, 3000.0, tables_set))
            keeps.append(sum(int(idx.eq(0).sum()) for idx, _ in walk))
    assert keeps[1] > 1.2 * keeps[0]


def filtered_model(model: CodecModel) -> CodecModel:
    """``model`` with a small post-filter whose last conv is not zero, so it changes pixels."""
    postfilter = PostFilter(FilterConfig(channels=8, blocks=1))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        postfilter.out.weight.copy_(0.05 * torch.randn(postfilter.out.weight.shape, generator=generator))
    return model.replace(postfilter=postfilter)


def test_a_post_filter_runs_on_every_decoded_tile_on_both_sides(
    tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiles, "TILE", 64)
    model = filtered_model(tiny_model)
    assert model.fingerprint != tiny_model.fingerprint
    calls: list[tuple[int, ...]] = []
    hook = model.postfilter.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape)))
    try:
        plain = codec.encode(kodak_crop, tiny_model, 8)
        result = codec.encode(kodak_crop, model, 8)
        assert len(calls) == 12  # the encoder filters its reconstruction, tile by tile, to compare
        # This random filter hurts, so the encoder leaves it off and the decoder does not run it.
        header = container.unpack(result.data).header
        assert not header.filtered
        pixels, _ = codec.decode_pixels(result.data, model)
        assert len(calls) == 12
        assert np.array_equal(pixels, plain.pixels)
        # A file whose header asks for the filter gets it, on every tile.
        forced = container.pack(replace(header, filtered=True), container.unpack(result.data).streams)
        smoothed, _ = codec.decode_pixels(forced, model)
        assert len(calls) == 24
    finally:
        hook.remove()
    assert set(calls) == {(1, 3, 64, 64)}
    assert np.array_equal(pixels, result.pixels)  # what encode reports is what decode returns
    # The filter changes pixels, not indices: same streams, other pixels.
    assert container.unpack(result.data).streams == container.unpack(plain.data).streams
    assert np.abs(smoothed.astype(int) - plain.pixels.astype(int)).mean() > 0.5
    assert codec.psnr(smoothed, pixels_of(kodak_crop), "RGB") < result.psnr  # why the encoder left it off
    with pytest.raises(FormatError, match="no post-filter"):
        codec.decode(
            container.pack(
                replace(container.unpack(plain.data).header, filtered=True), container.unpack(plain.data).streams
            ),
            tiny_model,
        )
    with pytest.raises(FormatError, match="made with another model"):
        codec.decode(result.data, tiny_model)
    with pytest.raises(FormatError, match="made with another model"):
        codec.decode(plain.data, model)

    path = tmp_path / "filtered.safetensors"
    model.save(path)
    loaded = load(path)
    assert loaded.fingerprint == model.fingerprint
    assert loaded.postfilter is not None
    assert loaded.postfilter.config == FilterConfig(channels=8, blocks=1)
    assert np.array_equal(codec.decode_pixels(result.data, loaded)[0], result.pixels)
    assert codec.encode(kodak_crop, loaded, 8).data == result.data


def test_an_untrained_post_filter_changes_nothing_but_the_fingerprint(tiny_model: CodecModel, kodak_crop: Path) -> None:
    model = tiny_model.replace(postfilter=PostFilter(FilterConfig(channels=8, blocks=2)))
    plain, result = (codec.encode(kodak_crop, m, 5) for m in (tiny_model, model))
    assert np.array_equal(result.pixels, plain.pixels)
    assert result.data != plain.data  # the fingerprint covers the filter
    assert container.unpack(result.data).streams == container.unpack(plain.data).streams


def test_padded_pixels_are_held_to_the_pixel_limit(tiny_model: CodecModel) -> None:
    """A 2000x1 image pads to 2000x16 with the tiny model's 16 px unit: 32,000 pixels of work."""
    assert tiny_model.config.unit == 16
    image = Image.fromarray(np.full((1, 2000, 3), 128, dtype=np.uint8))
    with pytest.raises(InputError, match="a 2000x1 image pads to 32,000 pixels, over the limit of 31,999"):
        codec.encode(image, tiny_model, 1, max_pixels=31_999)
    data = codec.encode(image, tiny_model, 1, max_pixels=32_000).data
    assert codec.decode(data, tiny_model, max_pixels=32_000).size == (2000, 1)
    with pytest.raises(InputError, match="pads to 32,000 pixels, over the limit of 31,999"):
        codec.decode(data, tiny_model, max_pixels=31_999)
    imageio.check_padded(200_000, 1, 32, 6_400_000)  # 196 tiles of 32 rows
    with pytest.raises(InputError, match="pads to 6,400,000 pixels"):
        imageio.check_padded(200_000, 1, 32, 6_399_999)


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (17, 1), (33, 20)])
def test_any_size_from_one_pixel(tiny_model: CodecModel, size: tuple[int, int]) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    result = codec.encode(image, tiny_model, 8)
    decoded = codec.decode(result.data, tiny_model)
    assert decoded.size == size
    assert np.array_equal(np.asarray(decoded), result.pixels)


def gray_ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))


RAMP = Image.fromarray(gray_ramp(), "L")


@pytest.mark.parametrize(
    ("image", "mode", "gray"),
    [
        (RAMP, "L", gray_ramp()),
        (RAMP.convert("1"), "L", np.asarray(RAMP.convert("1").convert("L"))),  # dithered: hard to code
        (Image.fromarray(gray_ramp().astype(np.uint16) * 257).convert("I;16"), "L", gray_ramp()),
        (RAMP.convert("LA"), "L", gray_ramp()),
        (RAMP.convert("RGBA"), "RGB", None),
        (RAMP.convert("RGB").convert("P"), "RGB", None),
        (RAMP.convert("CMYK"), "RGB", None),
    ],
)
def test_modes(tiny_model: CodecModel, image: Image.Image, mode: str, gray: np.ndarray | None) -> None:
    result = codec.encode(image, tiny_model, 8)
    decoded = codec.decode(result.data, tiny_model)
    assert decoded.mode == mode
    assert decoded.size == (48, 40)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(result.image().convert("RGB")))
    if gray is not None:  # PSNR is measured on the gray image the decoder returns
        expected = peak_signal_noise_ratio(gray, np.asarray(decoded), data_range=255)
        assert result.psnr == pytest.approx(expected)
        assert result.psnr > (5 if image.mode == "1" else 15)


def test_sixteen_bit_gray_is_scaled_to_eight_bits() -> None:
    from ddncodec import imageio

    wide = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).convert("I;16")
    pixels, mode = imageio.to_pixels(wide)
    assert mode == "L"
    assert pixels[0, :, 0].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparency_is_refused(tiny_model: CodecModel, mode: str) -> None:
    image = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    image.putpixel((3, 3), (10, 20, 30, 128))
    with pytest.raises(InputError, match="does not code transparency"):
        codec.encode(image.convert(mode), tiny_model)


def test_float_images_are_refused(tiny_model: CodecModel) -> None:
    with pytest.raises(InputError, match="floating-point"):
        codec.encode(Image.new("F", (4, 4)), tiny_model)


def test_exif_orientation_is_applied(tiny_model: CodecModel, tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert codec.decode(codec.encode(path, tiny_model, 8).data, tiny_model).size == (24, 40)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF", "PNG"])
def test_formats(tiny_model: CodecModel, kodak_crop: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.open(kodak_crop).save(buffer, format=fmt)
    result = codec.encode(buffer.getvalue(), tiny_model, 8)
    assert (result.width, result.height) == (256, 192)
    assert result.psnr > 18


def test_unreadable_inputs_raise_input_error_and_missing_files_os_errors(
    tiny_model: CodecModel, tmp_path: Path
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for source in (text, b"\x89PNG\r\n\x1a\n broken"):
        with pytest.raises(InputError, match="cannot read image"):
            codec.encode(source, tiny_model)
    with pytest.raises(FileNotFoundError):
        codec.encode(tmp_path / "missing.png", tiny_model)
    with pytest.raises(IsADirectoryError):
        codec.encode(tmp_path, tiny_model)
    with pytest.raises(InputError, match="over the limit"):
        codec.encode(Image.new("RGB", (100, 100)), tiny_model, max_pixels=9999)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quality": 9}, "quality must be 1..8"),
        ({"layers": 4}, "layers must be 1..3"),
        ({"bpp": -1.0}, "bpp must be a positive number"),
        ({"bpp": 0.1, "quality": 3}, "not combined with quality"),
        ({"effort": 3}, "effort must be one of 1, 2"),
    ],
)
def test_bad_options_raise_input_error(tiny_model: CodecModel, kodak_crop: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        codec.encode(kodak_crop, tiny_model, **kwargs)


def test_another_models_file_is_refused(tiny_model: CodecModel, kodak_crop: Path) -> None:
    tables = [t.copy() for t in tiny_model.priors.tables]
    tables[0][0] += 1
    other = CodecModel(tiny_model.network, Priors(tables), tiny_model.card)
    data = codec.encode(kodak_crop, other, layers=1).data
    with pytest.raises(FormatError, match="made with another model"):
        codec.decode(data, tiny_model)


def test_decode_layers_beyond_the_file_are_refused(tiny_model: CodecModel, kodak_crop: Path) -> None:
    data = codec.encode(kodak_crop, tiny_model, layers=2).data
    with pytest.raises(InputError, match=r"layers must be 1\.\.2"):
        codec.decode(data, tiny_model, layers=3)


def test_corrupt_files_raise_format_error(tiny_model: CodecModel, kodak_crop: Path) -> None:
    data = codec.encode(kodak_crop, tiny_model, layers=3).data
    rng = np.random.default_rng(0)
    for position in rng.integers(0, len(data), 40):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(FormatError):
            codec.decode(bytes(flipped), tiny_model)
    with pytest.raises(FormatError, match="truncated"):
        codec.decode(data[:-1], tiny_model)
    with pytest.raises(FormatError, match=r"not a \.ddn file"):
        codec.decode(kodak_crop.read_bytes(), tiny_model)


def test_a_prefix_with_a_flipped_bit_in_a_kept_layer_is_refused(tiny_model: CodecModel, kodak_crop: Path) -> None:
    """Cut after layer 2, the file is a valid prefix; a flip in any of its layer streams
    (or their CRCs) is caught by that layer's CRC."""
    data = codec.encode(kodak_crop, tiny_model, layers=3).data
    ends = layer_ends(data)
    prefix = data[: ends[1]]
    assert codec.decode(prefix, tiny_model).size == (256, 192)
    start = container.parse_header(data)[1]
    rng = np.random.default_rng(1)
    for position in [start, ends[0] - 5, ends[0] - 1, ends[0], ends[1] - 5, *rng.integers(start, ends[1], 20)]:
        flipped = bytearray(prefix)
        flipped[position] ^= 1 << int(rng.integers(8))
        layer = 0 if position < ends[0] else 1
        with pytest.raises(FormatError, match=f"checksum mismatch in layer {layer}"):
            codec.decode(bytes(flipped), tiny_model)


def test_psnr_of_identical_images_is_infinite() -> None:
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    assert codec.psnr(image, image, "RGB") == math.inf


SHIPPED = Path(__file__).resolve().parent.parent / "models" / "default.safetensors"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model in models/")
def test_shipped_model_end_to_end(kodak_crop: Path) -> None:
    """The public API with the default model: bytes out, the encoder's image back."""
    import ddncodec

    data = ddncodec.encode(kodak_crop)
    image = ddncodec.decode(data)
    assert image.size == (256, 192)
    assert data.startswith(b"DDN")
    assert codec.psnr(np.asarray(image), pixels_of(kodak_crop), "RGB") > 18


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model in models/")
def test_the_default_q3_codes_the_detail_layer_and_files_of_the_former_q3_still_decode(kodak_crop: Path) -> None:
    """q3 is the detail layer at step 170 on a 4-layer walk (model version 13; 6 layers since
    session 24); the rung it replaced then, a plain 12-layer walk at λ 3000, coded with table
    set 2, which the model keeps for its files."""
    model = codec.load_model("default")
    assert codec.ladder(model)[2] == Rung(4, 1e4, 170)
    assert codec.table_set(model, codec.ladder(model)[2]) == 1  # q2's walk and tables (q1's for these layers)
    pixels = pixels_of(kodak_crop)
    q3 = codec.encode(kodak_crop, model, 3)
    assert container.unpack(q3.data).header.detail_step == 170
    former = encoder.encode_pixels(pixels, "RGB", model, Rung(12, 3000.0), tables=2)
    header = container.unpack(former.data).header
    assert (header.table_set, header.detail_step) == (2, 0)
    assert np.array_equal(codec.decode_pixels(former.data, "default")[0], former.pixels)
    assert len(q3.data) <= len(former.data) and q3.psnr > former.psnr + 0.3  # 880 B 26.80 dB against 897 B 26.32 dB


def test_a_named_model_decodes_the_files_of_the_named_model_that_made_them(
    tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a new default ships, files of the one before still decode by name; a model
    given by path decodes only its own files."""
    folder = tmp_path / "models"
    folder.mkdir()
    tiny_model.save(folder / "old.safetensors")
    network = copy.deepcopy(tiny_model.network)
    with torch.no_grad():
        network.layers[0].embed.bias += 1 / 64  # another model: another fingerprint
    newer = tiny_model.replace(network=network)
    for path in (folder / "new.safetensors", tmp_path / "elsewhere.safetensors"):
        newer.save(path)
    monkeypatch.setenv("DDNCODEC_MODELS", str(folder))
    old_file = codec.encode(kodak_crop, "old", 8)
    assert codec.load_model("new").fingerprint != codec.load_model("old").fingerprint
    assert np.array_equal(codec.decode_pixels(old_file.data, "new")[0], old_file.pixels)
    with pytest.raises(FormatError, match="made with another model"):
        codec.decode_pixels(old_file.data, tmp_path / "elsewhere.safetensors")
