"""The detail filter: a post-filter after the detail layer, chosen per file by the encoder,
flagged by format version 4, and covered by the fingerprint only where a file uses it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from make_golden import DETAIL_STEP as STEP
from make_golden import detail_flags, fit_detail_filter
from PIL import Image

from ddncodec import codec, container, detail
from ddncodec.cli import main
from ddncodec.codec import Rung, detail_filter
from ddncodec.container import Header
from ddncodec.data import to_tensor
from ddncodec.errors import FormatError
from ddncodec.modelfile import CodecModel, load
from ddncodec.postfilter import FilterConfig, PostFilter
from ddncodec.tensors import to_uint8

RUNG = Rung(3, 0.0, STEP)


def pixels_of(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def filtered_model(tiny_model: CodecModel) -> CodecModel:
    original = pixels_of(Path(__file__).parent / "data" / "kodak" / "kodim23_crop.png")
    net, losses = fit_detail_filter(tiny_model, original)
    assert losses[-1] < 0.9 * losses[0]
    return tiny_model.replace(detailfilter=net)


def test_the_encoder_runs_the_filter_where_it_helps_and_the_decoder_follows(
    tiny_model: CodecModel, filtered_model: CodecModel, kodak_crop: Path, no_colour_correction: None
) -> None:
    original = pixels_of(kodak_crop)
    plain = codec.encode_pixels(original, "RGB", tiny_model, RUNG)
    smooth = codec.encode_pixels(original, "RGB", filtered_model, RUNG)
    assert plain.data[3] == smooth.data[3] == container.DC_SIGNS_VERSION
    assert not container.unpack(plain.data).header.detail_filtered
    assert container.unpack(smooth.data).header.detail_filtered
    assert len(smooth.data) == len(plain.data)  # the filter costs no byte
    assert smooth.psnr > plain.psnr + 0.2
    pixels, _ = codec.decode_pixels(smooth.data, filtered_model)
    assert np.array_equal(pixels, smooth.pixels)
    assert smooth.psnr == pytest.approx(codec.psnr(pixels, original, "RGB"))
    # The file names the whole model: the model without the filter refuses it in one line.
    with pytest.raises(FormatError, match="made with another model"):
        codec.decode_pixels(smooth.data, tiny_model)
    forged = container.unpack(smooth.data)  # the same file claiming the core model: still refused
    header = dataclasses.replace(forged.header, fingerprint=tiny_model.fingerprint[: container.FINGERPRINT_BYTES])
    with pytest.raises(FormatError, match="the model has none"):
        codec.decode_pixels(container.pack(header, forged.streams, forged.detail), tiny_model)
    # Cut before its detail stream, it is the walk's prefix, as any file.
    header = container.unpack(smooth.data).header
    cut = smooth.data[: len(smooth.data) - header.detail_length - container.LAYER_CRC_BYTES]
    walk = codec.encode_pixels(original, "RGB", tiny_model, Rung(RUNG.layers, RUNG.lam))
    assert np.array_equal(codec.decode_pixels(cut, filtered_model)[0], walk.pixels)


def test_files_that_do_not_run_it_are_the_core_models_byte_for_byte(
    tiny_model: CodecModel, filtered_model: CodecModel, kodak_crop: Path
) -> None:
    """Without a detail layer, or where the filter would not help, a file is what the model
    without the filter writes (its fingerprint too), so files made before it stay valid."""
    original = pixels_of(kodak_crop)
    assert filtered_model.fingerprint != tiny_model.fingerprint
    assert filtered_model.core_fingerprint == tiny_model.fingerprint
    walk = Rung(RUNG.layers, RUNG.lam)
    assert codec.encode_pixels(original, "RGB", filtered_model, walk).data == (
        codec.encode_pixels(original, "RGB", tiny_model, walk).data
    )
    harmful = PostFilter(FilterConfig(channels=8, blocks=1, cells=(detail.BLOCK,), step=True))
    torch.nn.init.normal_(harmful.out.weight, std=0.5)
    worse = tiny_model.replace(detailfilter=harmful)
    old = codec.encode_pixels(original, "RGB", tiny_model, RUNG)
    assert codec.encode_pixels(original, "RGB", worse, RUNG).data == old.data
    assert np.array_equal(codec.decode_pixels(old.data, filtered_model)[0], old.pixels)


def test_the_filter_runs_in_pieces_as_on_the_whole_image(
    filtered_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DETAIL_MARGIN px of context reach past the filter's field of view: 24x24 pieces of a
    192x256 image give the single pass's pixels."""
    original = pixels_of(kodak_crop)
    base = codec.encode_pixels(original, "RGB", filtered_model, Rung(RUNG.layers, RUNG.lam)).pixels
    levels = detail.residual_levels(original, base, STEP)
    decoded = detail.apply(base, levels, STEP)
    net = filtered_model.detailfilter
    with torch.inference_mode():
        whole = to_uint8(net(to_tensor(decoded[None]), detail_flags(levels, net, decoded.shape[:2]), STEP))
    monkeypatch.setattr(detail_filter, "DETAIL_STRIP", 24)
    pieces = detail_filter.detail_filtered(filtered_model, decoded, detail.coded_blocks(levels), STEP)
    difference = np.abs(pieces.astype(int) - whole[0].permute(1, 2, 0).numpy())
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999
    assert not np.array_equal(pieces, decoded)


def test_a_filter_that_reaches_past_the_margin_gets_more_context(
    filtered_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter of 9 blocks reads 80 px around a pixel, past DETAIL_MARGIN (64): its pieces
    take 80 px of context and give the single pass's pixels, which 64 px would not."""
    config = replace(filtered_model.detailfilter.config, channels=4, blocks=9)
    assert detail_filter.reach(config) == 80 and detail_filter.margin(config) == 80
    assert detail_filter.margin(filtered_model.detailfilter.config) == detail_filter.DETAIL_MARGIN
    torch.manual_seed(0)
    deep = PostFilter(config)
    for name, weight in deep.named_parameters():
        if name.endswith("weight"):
            torch.nn.init.normal_(weight, std=0.25)  # every block changes what it is given, far pixels too
    model = filtered_model.replace(detailfilter=deep.eval())
    original = pixels_of(kodak_crop)
    base = codec.encode_pixels(original, "RGB", model, Rung(RUNG.layers, RUNG.lam)).pixels
    levels = detail.residual_levels(original, base, STEP)
    decoded = detail.apply(base, levels, STEP)
    with torch.inference_mode():
        whole = to_uint8(deep(to_tensor(decoded[None]), detail_flags(levels, deep, decoded.shape[:2]), STEP))
    whole = whole[0].permute(1, 2, 0).numpy().astype(int)

    def in_pieces_is_whole() -> bool:
        with torch.inference_mode():
            pieces = detail_filter.detail_filtered(model, decoded, detail.coded_blocks(levels), STEP)
        difference = np.abs(pieces.astype(int) - whole)
        return bool(difference.max() <= 1 and (difference == 0).mean() > 0.999)

    monkeypatch.setattr(detail_filter, "DETAIL_STRIP", 24)
    assert in_pieces_is_whole()
    monkeypatch.setattr(detail_filter, "margin", lambda config: detail_filter.DETAIL_MARGIN)
    assert not in_pieces_is_whole()  # 0.27 % of the pixels differ


def test_a_model_file_keeps_its_detail_filter_and_info_shows_it(
    filtered_model: CodecModel, kodak_crop: Path, tmp_path: Path
) -> None:
    filtered_model.save(tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors")
    assert again.fingerprint == filtered_model.fingerprint
    assert again.core_fingerprint == filtered_model.core_fingerprint
    assert again.detailfilter is not None and again.detailfilter.config == filtered_model.detailfilter.config
    ddn = tmp_path / "a.ddn"
    ddn.write_bytes(codec.encode_pixels(pixels_of(kodak_crop), "RGB", again, RUNG).data)
    facts = json.loads(CliRunner().invoke(main, ["info", str(ddn), "--json"]).stdout)
    assert facts["detail_filter"] is True and facts["model"] == again.fingerprint[:4].hex()
    assert "detail filter on" in CliRunner().invoke(main, ["info", str(ddn)]).stdout


@pytest.mark.parametrize(("legacy", "version"), [(True, 4), (False, 5)])
def test_headers_carry_the_detail_filter_flag_and_only_with_a_detail_stream(legacy: bool, version: int) -> None:
    """Version 4 is the flag itself; version 5 sets a bit of the mode byte."""
    fingerprint = bytes.fromhex("0badf00d")
    header = Header(fingerprint, 64, 48, "RGB", 0, (3,), False, 20, 5, True, legacy)
    data = container.pack(header, [b"abc"], b"12345")
    assert data[3] == version
    assert container.unpack(data).header == header
    unfiltered = container.unpack(container.pack(replace(header, detail_filtered=False), [b"abc"], b"12345"))
    assert unfiltered.header.detail_filtered is False and unfiltered.header.legacy_detail is legacy
    with pytest.raises(ValueError, match="without a detail stream"):
        container.pack(Header(fingerprint, 64, 48, "RGB", 0, (3,), False, 0, 0, True), [b"abc"])
