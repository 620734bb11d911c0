"""The post-filter's side inputs (refined cells, cell borders), its configs, its storage in
half precision, and the encoder and decoder running it alike; its training: test_filtertrain.py."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddncodec import codec, container, postfilter
from ddncodec.codec import tiles
from ddncodec.modelfile import CodecModel, half_precision, load
from ddncodec.postfilter import FLOAT32_ENV, FilterConfig, PostFilter, refined_flags
from ddncodec.tensors import from_uint8

DATA = Path(__file__).parent / "data"


def test_refined_flags_mark_each_layers_refined_cells_at_quarter_resolution() -> None:
    coarse = torch.tensor([[[0, 3], [1, 0]]])  # 2x2 cells of 16 px
    fine = torch.zeros(1, 4, 4, dtype=torch.long)  # 4x4 cells of 8 px
    fine[0, 3, 0] = 5
    flags = refined_flags([coarse, fine], (16, 8, 4), (32, 32))
    assert flags.shape == (1, 3, 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.uint8)
    expected[:4, 4:] = 1  # cell (0, 1)
    expected[4:, :4] = 1  # cell (1, 0)
    assert torch.equal(flags[0, 0], expected)
    assert flags[0, 1].sum() == 4 and flags[0, 1, 6:, :2].all()  # one 8 px cell = 2x2 positions
    assert not flags[0, 2].any()  # a layer not decoded yet: every cell kept


def test_a_filter_with_side_inputs_needs_its_flags_and_uses_them() -> None:
    config = FilterConfig(channels=8, blocks=1, cells=(16, 8, 4))
    assert config.borders == (8, 16) and config.side_channels == 3 + 4
    net = PostFilter(config).eval()
    with torch.no_grad():
        net.out.weight.normal_(0, 0.05)
    x = torch.rand(1, 3, 32, 32) - 0.5
    none, some = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    some[:, 0, :4] = 1
    with torch.no_grad():
        assert not torch.equal(net(x, none), net(x, some))
    with pytest.raises(ValueError, match="refined flags"):
        net(x)
    assert FilterConfig.from_json(config.to_json()) == config


def test_a_widened_filter_starts_as_the_pixels_only_filter_it_came_from() -> None:
    torch.manual_seed(0)
    old = PostFilter(FilterConfig(channels=8, blocks=1)).eval()
    with torch.no_grad():
        old.out.weight.normal_(0, 0.05)
    new = PostFilter(FilterConfig(channels=8, blocks=3, cells=(16, 8, 4))).eval()  # two more blocks, side inputs
    new.widen_from(old.state_dict())
    x = torch.rand(2, 3, 32, 32) - 0.5
    flags = torch.randint(0, 2, (2, 3, 8, 8))
    with torch.no_grad():
        assert torch.equal(old(x), new(x, flags))
    with pytest.raises(ValueError, match="more blocks"):
        PostFilter(FilterConfig(channels=8, blocks=0)).widen_from(old.state_dict())


def test_a_filter_widened_for_a_grown_model_ignores_the_new_layers_flags() -> None:
    torch.manual_seed(0)
    old = PostFilter(FilterConfig(channels=8, blocks=1, cells=(16, 8, 4))).eval()
    with torch.no_grad():
        old.out.weight.normal_(0, 0.05)
        old.embed.weight.normal_(0, 0.05)
    new = PostFilter(FilterConfig(channels=8, blocks=1, cells=(16, 8, 4, 4, 4))).eval()  # two more 4 px layers
    new.widen_from(old.state_dict())
    x = torch.rand(2, 3, 32, 32) - 0.5
    flags = torch.randint(0, 2, (2, 5, 8, 8))
    with torch.no_grad():
        assert torch.equal(old(x, flags[:, :3]), new(x, flags))
        changed = flags.clone()
        changed[:, 3:] = 1 - changed[:, 3:]
        assert torch.equal(new(x, flags), new(x, changed))
        changed[:, 1] = 1 - changed[:, 1]  # an old layer's flags still count
        assert not torch.equal(new(x, flags), new(x, changed))
    one_layer = PostFilter(FilterConfig(channels=8, blocks=1, cells=(4,))).state_dict()  # no borders
    with pytest.raises(ValueError, match="cannot extend"):
        PostFilter(FilterConfig(channels=8, blocks=1, cells=(8, 4, 4))).widen_from(one_layer)


@pytest.mark.parametrize("bad", [{"cells": (6,)}, {"cells": (0,)}, {"channels": 0}, {"cells": ("8",)}])
def test_bad_filter_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        FilterConfig(**bad)


def side_filtered(model: CodecModel) -> CodecModel:
    cells = tuple(s.cell for s in model.config.layers)
    net = PostFilter(FilterConfig(channels=8, blocks=1, cells=cells))
    with torch.no_grad():
        net.out.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(5))
    return model.replace(postfilter=net)


def test_decode_runs_the_side_input_filter_exactly_as_the_encoder_did(
    tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiles, "TILE", 64)  # several tiles: the flags are per tile
    model = side_filtered(tiny_model)
    path = tmp_path / "side.safetensors"
    model.save(path)
    loaded = load(path)
    assert loaded.postfilter.config == model.postfilter.config
    pixels = np.asarray(Image.open(kodak_crop).convert("RGB"))
    seen: list[torch.Tensor] = []
    hook = loaded.postfilter.register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    with codec.workers(1):  # the hook sees the tiles in order
        plain = codec.encode_pixels(pixels, "RGB", loaded, codec.Rung(3, 300.0))
    assert not container.unpack(plain.data).header.filtered
    encoder_flags = list(seen)
    # The random filter hurts, so the encoder leaves it off; force it on in the header.
    parsed = container.unpack(plain.data)
    forced = container.pack(replace(parsed.header, filtered=True), parsed.streams)
    seen.clear()
    decoded, _ = codec.decode_pixels(forced, loaded, threads=1)
    hook.remove()
    assert len(seen) == len(encoder_flags) == 12  # 4x3 tiles of 64 px
    assert all(torch.equal(a, b) for a, b in zip(seen, encoder_flags, strict=True))
    assert any(f.any() for f in seen) and not all(f.all() for f in seen)
    assert not np.array_equal(decoded, plain.pixels)  # the filter ran on the decode
    # Without its flags the same filter gives other pixels: decode really reads them.
    monkeypatch.setattr(tiles, "refined_flags", lambda chosen, cells, size: refined_flags([], cells, size))
    assert not np.array_equal(codec.decode_pixels(forced, loaded)[0], decoded)


def test_a_pixels_only_filter_config_reads_as_before_side_inputs_existed() -> None:
    # The shipped model's fingerprint (in every .ddn file made with it) covers this JSON.
    assert json.loads(FilterConfig(channels=64, blocks=6).to_json()) == {"blocks": 6, "channels": 64}


def test_a_half_precision_filter_is_stored_in_half_the_bytes_and_loads_the_same(
    tiny_model: CodecModel, tmp_path: Path
) -> None:
    from safetensors import safe_open

    full = side_filtered(tiny_model)
    half = full.replace(postfilter=half_precision(side_filtered(tiny_model).postfilter))
    for model, name, dtype in ((full, "full", torch.float32), (half, "half", torch.float16)):
        path = tmp_path / f"{name}.safetensors"
        model.save(path)
        with safe_open(str(path), "pt") as f:
            names = [k for k in f.keys() if k.startswith("postfilter.")]  # noqa: SIM118 (safe_open is no dict)
            assert names and {f.get_tensor(k).dtype for k in names} == {dtype}
        loaded = load(path)
        assert loaded.fingerprint == model.fingerprint
        x, flags = torch.rand(1, 3, 32, 32) - 0.5, torch.randint(0, 2, (1, 3, 8, 8))
        with torch.no_grad():
            assert torch.equal(loaded.postfilter(x, flags), model.postfilter(x, flags))
    assert half.fingerprint != full.fingerprint


def test_a_half_precision_network_is_stored_as_float16_and_codes_the_same_after_loading(
    tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    model = tiny_model.replace(network=half_precision(copy.deepcopy(tiny_model.network)))
    path = tmp_path / "half.safetensors"
    model.save(path)
    with safe_open(str(path), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys() if k.startswith("layers.")} == {"torch.float16"}  # noqa: SIM118
    loaded = load(path)
    assert loaded.fingerprint == model.fingerprint != tiny_model.fingerprint
    pixels = np.asarray(Image.open(kodak_crop).convert("RGB"))
    a, b = (codec.encode_pixels(pixels, "RGB", m, codec.Rung(3, 300.0)) for m in (model, loaded))
    assert a.data == b.data and np.array_equal(a.pixels, b.pixels)


def test_a_bpp_search_filters_only_the_walk_it_keeps_and_writes_what_a_fixed_encode_would(
    tiny_model: CodecModel, kodak_crop: Path
) -> None:
    model = side_filtered(tiny_model)
    runs: list[int] = []
    hook = model.postfilter.register_forward_pre_hook(lambda _m, _args: runs.append(1))
    two, three = (codec.encode(kodak_crop, model, layers=n).bpp for n in (2, 3))
    runs.clear()
    searched = codec.encode(kodak_crop, model, bpp=0.5 * (two + three))
    tiles = len(codec.plan(searched.width, searched.height, model.config.unit))
    assert len(runs) == tiles  # one filter pass over the kept walk, none for the others
    hook.remove()
    pixels, tables = np.asarray(Image.open(kodak_crop).convert("RGB")), container.unpack(searched.data).header.table_set
    fixed = codec.encode_pixels(pixels, "RGB", model, searched.rung, tables)
    assert fixed.data == searched.data
    assert np.array_equal(fixed.pixels, searched.pixels)


def test_the_trunk_in_bfloat16_moves_the_filters_output_by_hundredths_of_a_level(
    kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = load(DATA / "tiny-detailfilter.safetensors").detailfilter  # a trained filter of the test model
    pixels = from_uint8(torch.from_numpy(np.array(Image.open(kodak_crop).convert("RGB"))).permute(2, 0, 1)[None])
    flags = torch.ones(1, 1, pixels.shape[2] // 4, pixels.shape[3] // 4, dtype=torch.uint8)

    def levels(native: bool) -> torch.Tensor:
        monkeypatch.setattr(postfilter, "bfloat16_native", lambda: native)
        with torch.no_grad():
            return 255 * net(pixels, flags, 40)

    exact, fast = levels(False), levels(True)
    assert fast.dtype == torch.float32
    residual, error = (exact - 255 * pixels).abs(), (fast - exact).abs()
    assert residual.mean() > 1  # the filter moves pixels by levels (2.1 on average) ...
    assert 0 < error.mean() < 0.05 and error.max() < 0.5  # ... which bfloat16 moves by hundredths (0.02, at most 0.23)


def test_the_float32_variable_keeps_the_filters_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FLOAT32_ENV, "1")
    postfilter.bfloat16_native.cache_clear()
    try:
        assert not postfilter.bfloat16_native()
    finally:
        postfilter.bfloat16_native.cache_clear()
