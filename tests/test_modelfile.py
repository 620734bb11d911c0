"""Model files that share tensors with a sibling file: what they store, how they load, and
each way the sibling can be missing, changed or named to escape its folder."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from safetensors import safe_open
from test_cli_codec import one_error_line
from test_hardening import rewrite_model

from ddncodec import codec, container
from ddncodec.cli import main
from ddncodec.errors import FormatError, ModelError
from ddncodec.modelfile import MODELS_DIR, CodecModel, load, named_models
from ddncodec.postfilter import FilterConfig, PostFilter

DATA = Path(__file__).parent / "data"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def with_postfilter(model: CodecModel) -> CodecModel:
    """``model`` with a post-filter of its own that changes the pixels: what a former
    default keeps beside the new one."""
    postfilter = PostFilter(FilterConfig(channels=8, blocks=1, cells=(16, 8)))
    with torch.no_grad():
        torch.nn.init.normal_(postfilter.out.weight, std=0.02, generator=torch.Generator().manual_seed(0))
    return model.replace(postfilter=postfilter)


def with_first_bias_moved(model: CodecModel) -> CodecModel:
    network = copy.deepcopy(model.network)
    with torch.no_grad():
        network.layers[0].embed.bias += 1 / 64
    return model.replace(network=network)


def stored_names(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def rewritten(path: Path, edit: Callable[[dict[str, torch.Tensor], dict[str, str]], object]) -> Path:
    """The file at ``path`` with ``edit(tensors, metadata)`` applied, in place."""
    return rewrite_model(path, path, edit)


@pytest.fixture()
def folder(tmp_path: Path, tiny_model: CodecModel) -> Path:
    """A folder with the tiny model as ``base.safetensors`` and, sharing its tensors,
    ``old.safetensors``: the tiny model with a post-filter."""
    tiny_model.save(tmp_path / "base.safetensors")
    with_postfilter(tiny_model).save(tmp_path / "old.safetensors", shares=load(tmp_path / "base.safetensors"))
    return tmp_path


def refusal(path: Path, kodak_crop: Path) -> str:
    """The one error line of an encode with the model at ``path`` (exit 2, nothing written)."""
    out = path.parent / "o.ddn"
    line = one_error_line(run("encode", kodak_crop, "-o", out, "--model", path), 2)
    assert not out.exists()
    assert len(line) < 800
    return line


@pytest.mark.parametrize(
    ("variant", "stored"),
    [
        (with_postfilter, lambda model: {f"postfilter.{name}" for name, _ in model.postfilter.named_parameters()}),
        (with_first_bias_moved, lambda _model: {"layers.0.embed.bias"}),
    ],
)
def test_a_sharing_file_stores_only_what_differs_and_loads_as_the_whole_model(
    tiny_model: CodecModel,
    kodak_crop: Path,
    tmp_path: Path,
    variant: Callable[[CodecModel], CodecModel],
    stored: Callable[[CodecModel], set[str]],
) -> None:
    tiny_model.save(tmp_path / "base.safetensors")
    model = variant(tiny_model)
    model.save(tmp_path / "old.safetensors", shares=load(tmp_path / "base.safetensors"))

    assert stored_names(tmp_path / "old.safetensors") == stored(model)
    loaded = load(tmp_path / "old.safetensors")
    assert (loaded.fingerprint, loaded.core_fingerprint) == (model.fingerprint, model.core_fingerprint)
    assert loaded.origin == (tmp_path / "old.safetensors").resolve()
    encoded = codec.encode(kodak_crop, model, 3)
    assert np.array_equal(codec.decode_pixels(encoded.data, loaded)[0], encoded.pixels)


def test_only_a_model_loaded_from_a_file_of_the_same_config_can_be_shared_with(
    tiny_model: CodecModel, tmp_path: Path
) -> None:
    model = with_postfilter(tiny_model)
    with pytest.raises(ValueError, match="loaded from a file"):
        model.save(tmp_path / "old.safetensors", shares=tiny_model.replace(origin=None))
    other_config = dataclasses.replace(tiny_model.config, chain_dropout=0.5)
    network = copy.deepcopy(tiny_model.network)
    network.config = other_config
    with pytest.raises(ValueError, match="same network config"):
        model.save(tmp_path / "old.safetensors", shares=tiny_model.replace(network=network))
    assert not (tmp_path / "old.safetensors").exists()


def test_a_missing_sibling_is_one_line_saying_which_file_to_put_where(folder: Path, kodak_crop: Path) -> None:
    base = load(folder / "base.safetensors")
    (folder / "base.safetensors").unlink()
    line = refusal(folder / "old.safetensors", kodak_crop)
    assert f"{folder / 'old.safetensors'}: stores only what differs from base.safetensors" in line
    assert f"which is not in {folder}: put the base.safetensors it was written with there" in line
    assert base.fingerprint.hex()[:8] in line


def test_a_changed_sibling_is_refused_naming_both_files(folder: Path, tiny_model: CodecModel, kodak_crop: Path) -> None:
    """A new model saved over the sibling: the file would make another model."""
    with_first_bias_moved(tiny_model).save(folder / "base.safetensors")
    line = refusal(folder / "old.safetensors", kodak_crop)
    assert f"{folder / 'old.safetensors'}: with the tensors of {folder / 'base.safetensors'}" in line
    assert "base.safetensors has changed since" in line
    assert "put back the base.safetensors it was written with" in line


def test_a_sibling_changed_only_where_the_file_has_its_own_tensors_still_makes_the_model(
    folder: Path, tiny_model: CodecModel
) -> None:
    """The recorded fingerprint decides, not the sibling's: a new default that keeps the
    network and replaces only the post-filter leaves the former one loadable."""
    expected = load(folder / "old.safetensors").fingerprint
    replaced = tiny_model.replace(postfilter=PostFilter(FilterConfig(channels=4, blocks=1)))
    replaced.save(folder / "base.safetensors")
    assert load(folder / "old.safetensors").fingerprint == expected


def test_a_file_whose_own_tensors_changed_is_damaged(folder: Path, kodak_crop: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], _meta: dict[str, str]) -> None:
        tensors["postfilter.out.bias"] = tensors["postfilter.out.bias"] + 1

    line = refusal(rewritten(folder / "old.safetensors", edit), kodak_crop)
    assert line.endswith("the file is damaged")


def test_a_sibling_of_another_network_config_is_refused(folder: Path, tiny_model: CodecModel, kodak_crop: Path) -> None:
    network = copy.deepcopy(tiny_model.network)
    network.config = dataclasses.replace(tiny_model.config, chain_dropout=0.5)
    tiny_model.replace(network=network).save(folder / "base.safetensors")
    assert "base.safetensors has another network config" in refusal(folder / "old.safetensors", kodak_crop)


def test_a_sibling_that_shares_in_turn_is_refused(folder: Path, tiny_model: CodecModel, kodak_crop: Path) -> None:
    """Chains and loops (a file naming itself) are not followed."""
    with_first_bias_moved(tiny_model).save(folder / "chained.safetensors", shares=load(folder / "old.safetensors"))
    line = refusal(folder / "chained.safetensors", kodak_crop)
    assert "does not load" in line
    assert "old.safetensors: shares tensors with 'base.safetensors' in turn" in line
    rewritten(folder / "old.safetensors", lambda _t, meta: meta.update(shares="old.safetensors"))
    assert "in turn" in refusal(folder / "old.safetensors", kodak_crop)


@pytest.mark.parametrize(
    "name",
    [
        "../base.safetensors",
        "/etc/base.safetensors",
        "sub/base.safetensors",
        "sub\\base.safetensors",
        "..",
        ".",
        "",
        "base.safetensors\x00",
        "base\n.safetensors",
        "b" * 300 + ".safetensors",
    ],
)
def test_a_sibling_named_outside_its_folder_is_refused(folder: Path, kodak_crop: Path, name: str) -> None:
    rewritten(folder / "old.safetensors", lambda _t, meta: meta.update(shares=name))
    assert "must be a file name in its folder" in refusal(folder / "old.safetensors", kodak_crop)


@pytest.mark.parametrize("key", ["fingerprint", "shares_fingerprint"])
@pytest.mark.parametrize("value", [None, "", "zz" * 32, "AB" * 32, "ab" * 31, "ab" * 33])
def test_a_recorded_fingerprint_must_be_64_hex_digits(
    folder: Path, kodak_crop: Path, key: str, value: str | None
) -> None:
    def edit(_tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        if value is None:
            del meta[key]
        else:
            meta[key] = value

    line = refusal(rewritten(folder / "old.safetensors", edit), kodak_crop)
    assert f"records its {key} as 64 hex digits" in line


def test_a_named_model_without_its_sibling_leaves_the_other_named_models_decoding(
    folder: Path, tiny_model: CodecModel, kodak_crop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Searching the named models for a file's model skips one that cannot load for want
    of its sibling (here ``base``'s, listed first) instead of failing on it."""
    with_first_bias_moved(tiny_model).save(folder / "newer.safetensors")
    (folder / "old.safetensors").rename(folder / "a-former.safetensors")
    (folder / "base.safetensors").rename(folder / "z.safetensors")  # base made the file; a-former lost its sibling
    monkeypatch.setenv("DDNCODEC_MODELS", str(folder))
    assert (folder / "a-former.safetensors").resolve() not in named_models()
    assert (folder / "z.safetensors").resolve() in named_models()
    made_by_z = codec.encode(kodak_crop, "z", 3)
    assert np.array_equal(codec.decode_pixels(made_by_z.data, "newer")[0], made_by_z.pixels)
    with pytest.raises(ModelError, match=r"stores only what differs from base\.safetensors"):
        load("a-former")
    made_by_the_former = codec.encode(kodak_crop, with_postfilter(tiny_model), 3)
    with pytest.raises(FormatError, match="made with another model"):  # its model cannot load: no crash either
        codec.decode_pixels(made_by_the_former.data, "newer")


@pytest.mark.skipif(not (MODELS_DIR / "v10.safetensors").is_file(), reason="no shipped models in models/")
@pytest.mark.parametrize(
    ("name", "stored", "fingerprints", "made", "psnr"),
    [
        ("v9", {"postfilter", "detailfilter"}, ("374bc717", "1d6a4a82"), "v9_q1.ddn", 22.74),
        ("v9", {"postfilter", "detailfilter"}, ("374bc717", "1d6a4a82"), "v9_q5.ddn", 31.83),
        ("v10", {"detailfilter"}, ("2addd6f1", "243546ce"), "v10_q5.ddn", 31.97),
        ("v11", {"detailfilter"}, ("48ab50b4", "243546ce"), "v11_q5.ddn", 31.93),
        ("v12", {"detailfilter"}, ("92e12265", "243546ce"), "v12_q5.ddn", 32.04),
    ],
)
def test_the_shipped_former_versions_share_the_defaults_tensors_and_decode_their_files(
    kodak_crop: Path, tmp_path: Path, name: str, stored: set[str], fingerprints: tuple[str, str], made: str, psnr: float
) -> None:
    """models/v9, v10, v11 and v12.safetensors store only the filters they do not share
    with the default; with the default beside them, each is the model of its card, and a
    plain ``ddncodec decode``, like ``ddncodec.decode`` in Python, finds it for a file it
    made (version 9's at q1, its post-filter alone, and at q5; versions 10, 11 and 12 at q5,
    formats 8, 9 and 10, their detail filters), at the PSNR its encoder reported."""
    import ddncodec

    assert {tensor.split(".")[0] for tensor in stored_names(MODELS_DIR / f"{name}.safetensors")} == stored
    former = load(name)
    assert (former.fingerprint.hex()[:8], former.core_fingerprint.hex()[:8]) == fingerprints
    data = (DATA / made).read_bytes()
    assert container.unpack(data).header.fingerprint != load("default").fingerprint[:4]
    result = run("decode", DATA / made, "-o", tmp_path / "back.png")
    assert result.exit_code == 0, result.output
    back = np.asarray(Image.open(tmp_path / "back.png").convert("RGB"))
    assert np.array_equal(np.asarray(ddncodec.decode(data)), back)
    original = np.asarray(Image.open(kodak_crop).convert("RGB"))
    assert codec.psnr(back, original, "RGB") == pytest.approx(psnr, abs=0.05)
