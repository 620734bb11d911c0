"""The colour correction: its integer map, its fit, its bytes, and the files that carry one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ddncodec import codec, colour, container, smooth
from ddncodec.cli import main
from ddncodec.codec import encoder
from ddncodec.errors import FormatError
from ddncodec.ladder import Rung
from ddncodec.metrics import psnr
from ddncodec.modelfile import CodecModel


def pixels_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_map_is_the_documented_integer_arithmetic() -> None:
    # channel c gains (curve_c(p[c]) + cross · (other - p[c]) + 64) // 128, clipped; knots in 1/4 level
    knots = np.zeros((3, colour.KNOTS), dtype=np.int64)
    knots[0, 4], knots[0, 8] = 8, 127  # 2 levels at level 128, 31.75 at 256
    cross = np.zeros((3, 2), dtype=np.int64)
    cross[1, 0] = 64  # green gains half of (red - green)
    pixels = np.array([[[128, 100, 50], [144, 200, 0], [255, 0, 255]]], dtype=np.uint8)
    colour.Correction(np.zeros_like(knots), np.zeros_like(cross)).apply(pixels)
    assert np.array_equal(pixels[0, 0], [128, 100, 50])  # no correction: no change
    colour.Correction(knots, cross).apply(pixels)
    # red: 128 + (8*32 + 64) // 128 = 130; 144 + (8*16 + 64) // 128 = 145; 255 + (127*31 + 64) // 128 = 286 -> 255.
    # green: 100 + (64*28 + 64) // 128 = 114; 200 + (64*-56 + 64) // 128 = 172; 0 + (64*255 + 64) // 128 = 128.
    assert np.array_equal(pixels, [[[130, 114, 50], [145, 172, 0], [255, 128, 255]]])


def test_the_fit_finds_a_known_correction_and_its_bytes_round_trip(kodak_crop: Path) -> None:
    decoded = pixels_of(kodak_crop)
    # curves that pull the levels inwards (none is clipped: clipping is not in what the fit models)
    knots = np.array(
        [
            [30, 12, 4, 0, -6, -9, -14, -20, -24],
            [8, 8, 8, 4, 0, -4, -8, -8, -8],
            [10, 5, 0, -5, -10, -15, -20, -25, -30],
        ]
    )
    truth = colour.Correction(knots, np.array([[10, -20], [0, 5], [40, -8]]))
    original = decoded.copy()
    truth.apply(original)
    fitted = colour.fit(decoded, original)
    refitted = decoded.copy()
    fitted.apply(refitted)
    difference = np.abs(refitted.astype(int) - original)
    assert difference.max() <= 2 and difference.mean() < 0.15, (difference.max(), difference.mean())
    # The end knots are few pixels' (150 of red's levels are below 32), the others the truth's within a rounding
    assert np.abs(fitted.knots - truth.knots)[:, 1:-1].max() <= 2
    assert np.abs(fitted.cross - truth.cross).max() <= 1
    read = colour.Correction.from_bytes(fitted.to_bytes())
    assert np.array_equal(read.knots, fitted.knots) and np.array_equal(read.cross, fitted.cross)
    with pytest.raises(FormatError, match="colour correction of 11 bytes"):
        colour.Correction.from_bytes(bytes(11))


def test_a_photo_coded_without_a_detail_layer_carries_its_correction_and_decodes_to_it(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = pixels_of(kodak_crop)
    corrected = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0))
    assert corrected.data[3] == container.COLOUR_VERSION
    header = container.unpack(corrected.data).header
    assert len(header.colour) == colour.BYTES and not header.detail_step
    for threads in (1, 2):
        decoded, _ = codec.decode_pixels(corrected.data, tiny_model, threads=threads)
        assert np.array_equal(decoded, corrected.pixels)
    assert corrected.psnr == psnr(corrected.pixels, original)
    monkeypatch.setattr(encoder, "colour_corrected", lambda *_args, **_kwargs: None)
    plain = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0))
    assert plain.data[3] == container.VERSION
    assert len(corrected.data) == len(plain.data) + colour.BYTES
    assert corrected.psnr > plain.psnr + 0.05
    facts = json.loads(CliRunner().invoke(main, ["info", "--json", "-"], input=corrected.data).stdout)
    assert facts["colour_correction"] == header.colour.hex() and len(facts["colour_correction"]) == 2 * colour.BYTES
    # A prefix is a coarser image: the correction, fitted to the whole, is left out.
    cut = container.unpack(corrected.data)
    prefix = corrected.data[: len(corrected.data) - len(cut.streams[-1]) - container.LAYER_CRC_BYTES]
    assert np.array_equal(
        codec.decode_pixels(prefix, tiny_model)[0], codec.decode_pixels(plain.data, tiny_model, layers=2)[0]
    )


def test_a_gray_image_carries_no_correction_and_smooth_blocks_stay_exact(
    tiny_model: CodecModel, kodak_crop: Path
) -> None:
    in_colour = codec.encode(Image.open(kodak_crop), tiny_model, layers=3)
    in_gray = codec.encode(Image.open(kodak_crop).convert("L"), tiny_model, layers=3)
    assert in_colour.data[3] == container.COLOUR_VERSION
    assert in_gray.mode == "L" and in_gray.data[3] == container.VERSION
    # A band of flat colour across a photo: the photo is corrected, the flat blocks painted after it.
    photo = pixels_of(kodak_crop)
    pixels = np.concatenate([photo[:64], np.full((64, photo.shape[1], 3), (200, 30, 40), np.uint8), photo[64:128]])
    coded = codec.encode_pixels(pixels, "RGB", tiny_model, Rung(3, 0.0, 12))
    header = container.unpack(coded.data).header
    assert header.colour or header.walk_colour  # version 10, or 11 where its levels escape
    assert np.array_equal(coded.pixels[64:128], pixels[64:128])
    assert np.array_equal(codec.decode_pixels(coded.data, tiny_model)[0], coded.pixels)


def test_a_detail_file_corrects_its_walk_first_and_codes_less_for_more(
    tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk's correction comes before the detail layer, which then codes what the corrected
    walk misses; the decode's comes last. A file cut before its detail stream is the plain walk."""
    original = pixels_of(kodak_crop)
    corrected = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0, 40))
    header = container.unpack(corrected.data).header
    assert corrected.data[3] == container.DC_SIGNS_VERSION and header.predicted
    assert len(header.walk_colour) == len(header.colour) == colour.BYTES
    shown = CliRunner().invoke(main, ["info", "-"], input=corrected.data).stdout
    assert "colour corrections: the walk's and the decode's" in shown
    for threads in (1, 2):
        assert np.array_equal(codec.decode_pixels(corrected.data, tiny_model, threads=threads)[0], corrected.pixels)
    monkeypatch.setattr(encoder, "colour_corrected", lambda *_args, **_kwargs: None)
    walk = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0))
    cut = corrected.data[: len(corrected.data) - header.detail_length - container.LAYER_CRC_BYTES]
    assert np.array_equal(codec.decode_pixels(cut, tiny_model)[0], walk.pixels)
    plain = codec.encode_pixels(original, "RGB", tiny_model, Rung(3, 0.0, 40))
    assert plain.data[3] == container.DC_SIGNS_VERSION and not container.unpack(plain.data).header.colour
    # the tiny model's walk is far off in its tones: 8,445 B at 30.10 dB against 9,083 B at 29.38 dB
    assert len(corrected.data) < 0.96 * len(plain.data) and corrected.psnr > plain.psnr + 0.5


def test_the_fit_leaves_out_the_smooth_blocks_whatever_the_walk_made_of_them(kodak_crop: Path) -> None:
    """Under smooth blocks a walk can be anything (mid-gray where it never looked): fitted to,
    those pixels bent every curve at level 128, and a 24-megapixel mosaic at q8 took 4 % more
    bytes for 0.33 dB less. Left out, the fit is the rest of the image's."""
    decoded = pixels_of(kodak_crop)
    truth = colour.Correction(np.tile(np.arange(-8, 10, 2), (3, 1)), np.array([[10, -20], [0, 5], [40, -8]]))
    original = decoded.copy()
    truth.apply(original)
    walked, top = decoded.copy(), 8 * smooth.BLOCK
    walked[:top] = 128  # the top 8 block rows of the smooth blocks' size: smooth blocks the walk left gray
    smooth_blocks = np.zeros((192 // smooth.BLOCK, 256 // smooth.BLOCK), dtype=bool)
    smooth_blocks[:8] = True
    fitted = colour.fit(walked, original, left_out=smooth_blocks)  # colour.BLOCK must be smooth.BLOCK
    rest = colour.fit(decoded[top:], original[top:])
    assert np.array_equal(fitted.knots, rest.knots) and np.array_equal(fitted.cross, rest.cross)
    bent = colour.fit(walked, original)
    assert np.abs(bent.knots[:, 4] - truth.knots[:, 4]).min() > 8
