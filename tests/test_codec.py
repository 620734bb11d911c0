"""The data path: exact replay, progressive prefixes, rate control, image modes, bad input."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddncodec import codec, container, entropy
from ddncodec.codec import Rung
from ddncodec.errors import FormatError, InputError
from ddncodec.modelfile import CodecModel
from ddncodec.priors import Priors

KODAK = Path(__file__).parent / "data" / "kodak"


def pixels_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


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


def test_tiles_and_prefixes(tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 64 px tiles the 256x192 crop is 12 tiles: they decode to the encoder's
    reconstruction, and every layer prefix of the stream decodes."""
    monkeypatch.setattr(codec, "TILE", 64)
    assert len(codec.plan(256, 192, tiny_model.config.unit)) == 12
    result = codec.encode(kodak_crop, tiny_model, layers=3)
    assert np.array_equal(codec.decode_pixels(result.data, tiny_model)[0], result.pixels)
    parsed = container.unpack(result.data)
    start = len(result.data) - 4 - sum(parsed.header.lengths)
    for layers in (1, 2):
        coarse = codec.encode(kodak_crop, tiny_model, layers=layers).pixels
        cut = result.data[: start + sum(parsed.header.lengths[:layers])]
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


def test_code_length_within_one_percent_of_ideal(tiny_model: CodecModel) -> None:
    for path in sorted(KODAK.glob("*.png")):
        result = codec.encode(path, tiny_model, layers=3)
        parsed = container.unpack(result.data)
        ideal = 0.0
        for layer, stream in enumerate(parsed.streams):
            cells = (192 // tiny_model.config.layers[layer].cell) * (256 // tiny_model.config.layers[layer].cell)
            symbols = entropy.decode(stream, tiny_model.priors, layer, cells)
            ideal += entropy.ideal_bits(symbols, tiny_model.priors, layer)
        coded = 8 * sum(parsed.header.lengths)
        assert ideal <= coded <= 1.01 * ideal


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


def test_a_model_ladder_from_the_card_is_used(tiny_model: CodecModel, kodak_crop: Path) -> None:
    card = {**tiny_model.card, "ladder": [[1, 0.0]] * 7 + [[2, 500.0]]}
    laddered = CodecModel(tiny_model.network, tiny_model.priors, card)
    assert codec.encode(kodak_crop, laddered, 8).rung == Rung(2, 500.0)
    assert codec.encode(kodak_crop, laddered, 8, layers=3).rung == Rung(3, 500.0)
    assert codec.fallback_ladder(13)[-1] == Rung(13, 0.0)


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
        expected = 10 * np.log10(255**2 / np.mean((np.asarray(decoded).astype(float) - gray) ** 2))
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


def test_unreadable_inputs_raise_input_error(tiny_model: CodecModel, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for source in (text, tmp_path / "missing.png", tmp_path, b"\x89PNG\r\n\x1a\n broken"):
        with pytest.raises(InputError, match="cannot read image"):
            codec.encode(source, tiny_model)
    with pytest.raises(InputError, match="over the limit"):
        codec.encode(Image.new("RGB", (100, 100)), tiny_model, pixel_limit=9999)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quality": 9}, "quality must be 1..8"),
        ({"layers": 4}, "layers must be 1..3"),
        ({"bpp": -1.0}, "bpp must be a positive number"),
        ({"bpp": 0.1, "quality": 3}, "not combined with quality"),
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
