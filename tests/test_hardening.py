"""Hardening: determinism across threads, tiles and repeated encodes; model and checkpoint
files that are loaded without running pickled code and refused when they do not fit
their config; writes that a kill cannot half-do; the pixel limit and tiled encoding."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ddncodec
from ddncodec import codec, container
from ddncodec.atomic import write_atomically
from ddncodec.cli import main
from ddncodec.codec import tiles
from ddncodec.errors import FormatError, InputError, ModelError
from ddncodec.modelfile import CodecModel, load
from ddncodec.postfilter import FilterConfig, PostFilter

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
TINY_TRAINING = ["--config", "tiny", "--crop", "64", "--batch", "4", "--quiet"]


@pytest.fixture()
def photo() -> Image.Image:
    """100x70 px: with 32 px tiles, 4 x 3 tiles of which the last row and column are ragged."""
    with Image.open(DATA / "kodak" / "kodim05_crop.png") as image:
        return image.convert("RGB").crop((40, 30, 140, 100))


@pytest.fixture()
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiles, "TILE", 32)


def cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr


# ---------------------------------------------------------------- determinism


@pytest.mark.usefixtures("small_tiles", "one_thread")
@pytest.mark.parametrize("quality", [1, 8])
def test_decode_gives_the_encoders_pixels_on_one_and_two_threads(
    tiny_model: CodecModel, photo: Image.Image, quality: int
) -> None:
    torch.set_num_threads(2)
    encoded = codec.encode(photo, tiny_model, quality)
    assert len(codec.plan(100, 70, tiny_model.config.unit)) == 12
    for threads in (1, 2):
        torch.set_num_threads(threads)
        pixels, _ = codec.decode_pixels(encoded.data, tiny_model)
        assert np.array_equal(pixels, encoded.pixels), threads
        assert torch.get_num_threads() == threads  # the caller's setting is given back


@pytest.mark.usefixtures("one_thread")
def test_the_network_runs_one_tile_on_one_thread_whatever_the_caller_set(
    tiny_model: CodecModel, photo: Image.Image, small_tiles: None
) -> None:
    """oneDNN's float sums depend on thread count and batch size; a last-bit difference can
    flip a pixel's rounding, so the codec pins both (see codec._one_thread)."""
    seen: list[tuple[int, tuple[int, ...]]] = []
    hook = tiny_model.network.layers[0].embed.register_forward_pre_hook(
        lambda _module, args: seen.append((torch.get_num_threads(), tuple(args[0].shape)))
    )
    try:
        torch.set_num_threads(2)
        data = codec.encode(photo, tiny_model, layers=1).data
        codec.decode(data, tiny_model)
    finally:
        hook.remove()
    assert len(seen) == 2 * 12  # every tile once when encoding, once when decoding
    assert {threads for threads, _ in seen} == {1}
    assert {shape[0] for _, shape in seen} == {1}
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("one_thread")
def test_encoding_twice_or_on_other_thread_counts_gives_identical_bytes(
    tiny_model: CodecModel, photo: Image.Image
) -> None:
    torch.set_num_threads(1)
    first = [codec.encode(photo, tiny_model, q).data for q in (1, 5, 8)] + [
        codec.encode(photo, tiny_model, bpp=1.0).data
    ]
    torch.set_num_threads(2)
    again = [codec.encode(photo, tiny_model, q).data for q in (1, 5, 8)] + [
        codec.encode(photo, tiny_model, bpp=1.0).data
    ]
    assert first == again
    assert len(set(first[:3])) == 3


def test_a_file_decodes_alike_alone_and_in_a_batch(tiny_model_path: Path, tmp_path: Path) -> None:
    sources = sorted((DATA / "bsds").glob("*.png"))[:3]
    assert cli("encode", *sources, "-o", tmp_path / "ddn", "-q", "8", "--model", tiny_model_path, "--quiet")[0] == 0
    files = sorted((tmp_path / "ddn").glob("*.ddn"))
    assert cli("decode", *files, "-o", tmp_path / "batch", "--model", tiny_model_path, "--quiet")[0] == 0
    for file in files:
        alone = tmp_path / f"{file.stem}.png"
        assert cli("decode", file, "-o", alone, "--model", tiny_model_path, "--quiet")[0] == 0
        assert alone.read_bytes() == (tmp_path / "batch" / alone.name).read_bytes()


def test_tiles_are_coded_independently(
    tiny_model: CodecModel, photo: Image.Image, small_tiles: None, no_colour_correction: None
) -> None:
    """The top-left 32 px tile of the photo decodes to what that tile decodes to on its own
    (the walk's: colour corrections are fitted to the whole image)."""
    whole = codec.encode(photo, tiny_model, 8)
    corner = codec.encode(photo.crop((0, 0, 32, 32)), tiny_model, 8)
    assert np.array_equal(whole.pixels[:32, :32], corner.pixels)


# ---------------------------------------------------------------- model files


def rewrite_model(
    source: Path, target: Path, edit: Callable[[dict[str, torch.Tensor], dict[str, str]], object]
) -> Path:
    """A copy of a model file with ``edit(tensors, metadata)`` applied (``target`` may be ``source``)."""
    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as f:
        metadata = dict(f.metadata())
    edit(tensors, metadata)
    save_file(tensors, str(target), metadata=metadata)
    return target


def _config_edit(key: str, value: int):
    def edit(_tensors: dict, metadata: dict) -> None:
        config = json.loads(metadata["config"])
        config["layers"][0][key] = value
        metadata["config"] = json.dumps(config)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, _m: t.pop("layers.1.embed.weight"), r"missing \['layers.1.embed.weight'\]"),
        (lambda t, _m: t.update({"layers.0.extra": torch.zeros(3)}), r"unexpected \['layers.0.extra'\]"),
        (
            lambda t, _m: t.update({"layers.2.ddl.head.weight": torch.zeros(7, 16, 1, 1)}),
            r"layers.2.ddl.head.weight has shape \(7, 16, 1, 1\), config needs",
        ),
        (lambda t, _m: t.pop("priors.1"), "prior table 1 is missing"),
        (lambda t, _m: t.update({"priors.0": -t["priors.0"]}), "positive integers"),
        (_config_edit("channels", 10**7), r"over the limits \(cell <= 256, k <= 4096, channels <= 1024"),
        (_config_edit("k", 10**6), "over the limits"),
        (_config_edit("cell", 512), "over the limits"),
        (_config_edit("channels", 1000), r"config needs \(1000, "),  # within the limits: the shapes disagree
        (_config_edit("k", 4096), "config needs"),
        (_config_edit("out_stride", 0), "sizes > 0"),
        (_config_edit("cell", -16), "sizes > 0"),
        (lambda _t, m: m.update(config="{"), "model config is unreadable"),
        (lambda _t, m: m.pop("format"), "not a ddncodec model"),
    ],
)
def test_a_model_file_that_does_not_fit_its_config_is_refused(
    tiny_model_path: Path, tmp_path: Path, edit, message: str
) -> None:
    """Limits and shapes are checked before the config's network is allocated: a config
    claiming 10⁷ channels fails at once instead of asking for petabytes."""
    bad = rewrite_model(tiny_model_path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(ModelError, match=message):
        load(bad)


@pytest.fixture()
def filtered_model_path(tiny_model: CodecModel, tmp_path: Path) -> Path:
    """The tiny model with a small post-filter whose last conv is not zero."""
    postfilter = PostFilter(FilterConfig(channels=8, blocks=1))
    with torch.no_grad():
        postfilter.out.weight.fill_(1e-3)
    path = tmp_path / "filtered.safetensors"
    tiny_model.replace(postfilter=postfilter).save(path)
    return path


def _filter_config_edit(**changes: object):
    def edit(_tensors: dict, metadata: dict) -> None:
        metadata["postfilter"] = json.dumps({**json.loads(metadata["postfilter"]), **changes})

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_filter_config_edit(channels=16), "post-filter weights do not match its config"),
        (_filter_config_edit(blocks=2), "post-filter weights do not match its config"),
        (lambda t, _m: t.pop("postfilter.out.bias"), "post-filter weights do not match its config"),
        (lambda t, _m: t.update({"postfilter.extra": torch.zeros(3)}), "post-filter weights do not match its config"),
        (
            lambda t, _m: t.update({"postfilter.out.weight": torch.zeros(48, 8, 1, 1)}),
            "post-filter weights do not match its config",
        ),
        (lambda _t, m: m.pop("postfilter"), "post-filter weights without a post-filter config"),
        (lambda _t, m: m.update(postfilter="{"), "post-filter is unreadable"),
        (_filter_config_edit(channels=10**6), "post-filter is unreadable .*out of range"),
        (_filter_config_edit(channels="8"), "post-filter is unreadable .*needs integers"),
        (_filter_config_edit(depth=3), "post-filter is unreadable"),
    ],
)
def test_a_model_file_whose_post_filter_does_not_fit_its_config_is_refused(
    filtered_model_path: Path, tmp_path: Path, edit, message: str
) -> None:
    assert load(filtered_model_path).postfilter is not None
    bad = rewrite_model(filtered_model_path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(ModelError, match=message):
        load(bad)


def test_a_model_file_round_trips_with_its_fingerprint_and_covers_its_configs(
    tiny_model: CodecModel, tiny_model_path: Path, filtered_model_path: Path, tmp_path: Path
) -> None:
    with safe_open(str(tiny_model_path), "pt") as f:
        assert f.metadata()["format"] == "ddncodec-model-2"
    assert load(tiny_model_path).fingerprint == tiny_model.fingerprint
    filtered = load(filtered_model_path)
    assert filtered.fingerprint != tiny_model.fingerprint
    filtered.save(tmp_path / "again.safetensors")
    assert load(tmp_path / "again.safetensors").fingerprint == filtered.fingerprint
    # Same tensors, another config text: another model.
    other = rewrite_model(
        tiny_model_path,
        tmp_path / "dropout.safetensors",
        lambda _t, m: m.update(config=m["config"].replace('"chain_dropout": 0.05', '"chain_dropout": 0.1')),
    )
    assert load(other).config.chain_dropout == 0.1
    assert load(other).fingerprint != tiny_model.fingerprint


def test_a_format_1_model_file_still_loads(
    tiny_model: CodecModel, tiny_model_path: Path, tmp_path: Path, kodak_crop: Path
) -> None:
    """Format 1: one 1-D prior table per layer, no post-filter, the ladder on the card. It
    loads as one table set whose every context starts from that table, and the card's
    ladder becomes the model's."""
    rungs = [[1, 0.0]] * 4 + [[2, 1000.0]] * 3 + [[3, 0.0]]

    def to_format_1(tensors: dict, metadata: dict) -> None:
        metadata["format"] = "ddncodec-model-1"
        metadata["card"] = json.dumps({**json.loads(metadata["card"]), "ladder": rungs})
        metadata.pop("ladder", None)
        for i in range(len(tiny_model.config.layers)):
            tensors[f"priors.{i}"] = tensors[f"priors.{i}"][0].sum(0)

    old = load(rewrite_model(tiny_model_path, tmp_path / "v1.safetensors", to_format_1))
    assert old.priors.sets == 1
    assert old.postfilter is None
    assert old.ladder == tuple(codec.Rung(n, lam) for n, lam in rungs)
    assert "ladder" not in old.card
    for layer, table in enumerate(old.priors.tables):
        marginal = tiny_model.priors.tables[layer][0].sum(0)
        assert table.shape == (1, 8, marginal.size)
        assert (table == marginal).all()
    assert np.allclose(old.priors.probabilities(0), tiny_model.priors.probabilities(0))
    result = codec.encode(kodak_crop, old, 5)
    assert np.array_equal(codec.decode_pixels(result.data, old)[0], result.pixels)


def test_a_truncated_or_foreign_model_file_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_model_path.read_bytes()[:5000])
    png = tmp_path / "png.safetensors"
    png.write_bytes((DATA / "kodak" / "kodim23_crop.png").read_bytes())
    for path in (cut, png):
        with pytest.raises(ModelError, match="not a readable model file"):
            load(path)


class _Payload:
    """Unpickling this creates a folder: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture()
def pickle_bomb(tmp_path: Path) -> tuple[object, Path]:
    """A live payload (shown by unpickling it once) and the folder it would create."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.is_dir()
    marker.rmdir()
    return _Payload(marker), marker


def test_a_pickled_model_file_is_refused_without_running_its_code(
    pickle_bomb: tuple[object, Path], tmp_path: Path, kodak_crop: Path
) -> None:
    payload, marker = pickle_bomb
    evil = tmp_path / "evil.safetensors"
    torch.save({"layers.0.embed.weight": payload}, evil)
    with pytest.raises(ModelError, match="not a readable model file"):
        load(evil)
    code, stderr = cli("encode", kodak_crop, "-o", tmp_path / "x.ddn", "--model", evil)
    assert code == 2 and stderr.count("\n") == 1 and "not a readable model file" in stderr
    assert not marker.exists()
    assert not (tmp_path / "x.ddn").exists()


def test_a_pickled_training_checkpoint_is_refused_without_running_its_code(
    pickle_bomb: tuple[object, Path], tmp_path: Path
) -> None:
    payload, marker = pickle_bomb
    torch.save({"config": "{}", "model": payload, "step": 1}, tmp_path / "m.ckpt.pt")
    code, stderr = cli("train", "--data", DATA / "bsds", "--out", tmp_path / "m", "--resume", *TINY_TRAINING)
    assert code == 2 and stderr.count("\n") == 1 and "not a readable checkpoint" in stderr
    assert not marker.exists()


# ---------------------------------------------------------------- crash-safe writes

# Runs the CLI with one writer replaced: its N-th call writes half of the bytes it was
# given to the file it was given and then SIGKILLs the process, as a power cut would.
DIE_WHILE_WRITING = r"""
import io, os, signal, sys
from pathlib import Path

writer, fatal_call = sys.argv[1], int(sys.argv[2])
calls = 0

def fatal():
    global calls
    calls += 1
    return calls == fatal_call

def half_then_die(path, data):
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

if writer == "bytes":
    real_write_bytes = Path.write_bytes
    def write_bytes(self, data):
        if fatal():
            half_then_die(self, data)
        return real_write_bytes(self, data)
    Path.write_bytes = write_bytes
elif writer == "torch":
    import torch
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if fatal():
            buffer = io.BytesIO()
            real_save(obj, buffer)
            half_then_die(f, buffer.getvalue())
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
else:
    import safetensors.torch
    import ddncodec.codecmodel as codecmodel
    real_save_file = codecmodel.save_file
    def save_file(tensors, filename, metadata=None):
        if fatal():
            half_then_die(filename, safetensors.torch.save(tensors, metadata=metadata))
        return real_save_file(tensors, filename, metadata=metadata)
    codecmodel.save_file = save_file

from ddncodec.cli import main
from ddncodec.codec import tiles
main(sys.argv[3:], prog_name="ddncodec")
"""


def killed_while_writing(writer: str, fatal_call: int, *args: str | Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", DIE_WHILE_WRITING, writer, str(fatal_call), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr


def leftovers(folder: Path, expected: set[str]) -> list[Path]:
    """Files other than ``expected``: only hidden, half-written temporary files may be left."""
    extra = sorted(p for p in folder.iterdir() if p.name not in expected)
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in extra), extra
    return extra


@pytest.mark.slow
@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_kill_while_writing_leaves_the_previous_output_intact(
    command: str, tiny_model: CodecModel, tiny_model_path: Path, kodak_crop: Path, tmp_path: Path
) -> None:
    source = tmp_path / ("in.png" if command == "encode" else "in.ddn")
    target = tmp_path / ("out.ddn" if command == "encode" else "out.png")
    encoded = codec.encode(kodak_crop, tiny_model, 8)
    source.write_bytes(kodak_crop.read_bytes() if command == "encode" else encoded.data)
    previous = codec.encode(kodak_crop, tiny_model, 1).data if command == "encode" else kodak_crop.read_bytes()
    target.write_bytes(previous)

    killed_while_writing("bytes", 1, command, source, "-o", target, "--force", "--model", tiny_model_path)
    assert target.read_bytes() == previous
    (partial,) = leftovers(tmp_path, {source.name, target.name})
    assert partial.stat().st_size > 0  # the kill did strike mid-write
    # A writer that is still running (our parent process: alive while we are) keeps its file.
    running = tmp_path / f".{target.name}.tmp{os.getppid()}"
    running.write_bytes(b"still being written")

    assert cli(command, source, "-o", target, "--force", "--model", tiny_model_path, "--quiet")[0] == 0
    assert target.read_bytes() != previous
    assert leftovers(tmp_path, {source.name, target.name}) == [running]  # the dead writer's file is gone
    assert running.read_bytes() == b"still being written"


def test_only_a_dead_writers_temporary_file_of_the_same_target_is_removed(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)  # exited and reaped: no such process now
    names = [
        f".out.png.tmp{dead}",
        f".out.png.tmp{os.getppid()}",
        f".other.png.tmp{dead}",
        ".out.png.tmpx1",
        ".out.png.tmp",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    write_atomically(tmp_path / "out.png", lambda tmp: tmp.write_bytes(b"new"))
    assert (tmp_path / "out.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.png", *names[1:]])


@pytest.mark.parametrize(
    ("call", "code", "names_the_temporary_file"),
    [
        ("write_bytes", errno.ENOSPC, False),  # a full disk: write() knows no file name
        ("write_bytes", errno.EROFS, True),  # a read-only file system: creating the temporary file fails
        ("replace", errno.ENOSPC, False),
        ("replace", errno.EACCES, True),
    ],
)
def test_a_failed_write_names_the_output_and_leaves_the_previous_file(
    call: str,
    code: int,
    names_the_temporary_file: bool,
    tiny_model_path: Path,
    kodak_crop: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one line names the input and the output, never ``.out.ddn.tmp<PID>``."""
    target = tmp_path / "out.ddn"
    target.write_bytes(b"previous")

    def fail(path: Path, *_args: object) -> None:
        raise OSError(code, os.strerror(code), *([str(path)] if names_the_temporary_file else []))

    monkeypatch.setattr(*(os, "replace") if call == "replace" else (Path, "write_bytes"), fail)
    exit_code, stderr = cli("encode", kodak_crop, "-o", target, "--force", "--model", tiny_model_path)
    assert (exit_code, stderr) == (1, f"ddncodec: error: {kodak_crop}: {target}: {os.strerror(code)}\n")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ddn"]


def test_a_writer_s_own_os_error_names_the_output(tmp_path: Path) -> None:
    """Pillow refuses some modes with an OSError that names no file: the output is named."""
    target = tmp_path / "out.xbm"
    with pytest.raises(OSError) as raised:
        write_atomically(target, lambda tmp: Image.new("RGB", (1, 1)).save(tmp, format="XBM"))
    assert (raised.value.filename, raised.value.strerror) == (str(target), "cannot write mode RGB as XBM")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_kill_while_checkpointing_leaves_a_resumable_run_and_the_previous_model(tmp_path: Path) -> None:
    out = tmp_path / "m"
    files = {name: tmp_path / f"m.{name}" for name in ("safetensors", "ckpt.pt", "adam.pt")}
    train = ["train", "--data", DATA / "bsds", "--out", out, *TINY_TRAINING]
    assert cli(*train, "--steps", "2")[0] == 0
    before = {name: path.read_bytes() for name, path in files.items()}

    # Killed while writing the new Adam moments, the first file of a checkpoint.
    killed_while_writing("torch", 1, *train, "--steps", "3", "--resume")
    assert files["ckpt.pt"].read_bytes() == before["ckpt.pt"]
    assert files["safetensors"].read_bytes() == before["safetensors"]
    assert load(files["safetensors"]).card["steps"] == 2
    assert cli(*train, "--steps", "3", "--resume")[0] == 0
    after = files["safetensors"].read_bytes()
    assert load(files["safetensors"]).card["steps"] == 3

    # Killed while refreshing the model file, the last step of a checkpoint.
    killed_while_writing("safetensors", 1, *train, "--steps", "4", "--resume")
    assert files["safetensors"].read_bytes() == after
    assert torch.load(files["ckpt.pt"], weights_only=True)["step"] == 4
    assert cli(*train, "--steps", "5", "--resume")[0] == 0
    assert load(files["safetensors"]).card["steps"] == 5
    assert leftovers(tmp_path, {"m.safetensors", "m.ckpt.pt", "m.adam.pt", "m.log.jsonl"}) == []  # orphans removed


# ---------------------------------------------------------------- limits


def padded_pixels(width: int, height: int, model: CodecModel) -> int:
    return sum(t.padded[0] * t.padded[1] for t in codec.plan(width, height, model.config.unit))


def test_decoding_refuses_images_over_the_pixel_limit_before_allocating(
    tiny_model: CodecModel, photo: Image.Image
) -> None:
    """The header's size is held to the limit by the container, its padded size (the
    work) by the codec."""
    data = codec.encode(photo, tiny_model, 1).data
    padded = padded_pixels(100, 70, tiny_model)
    assert padded == 112 * 80
    assert codec.decode(data, tiny_model, max_pixels=padded).size == (100, 70)
    with pytest.raises(InputError, match=f"a 100x70 image pads to 8,960 pixels, over the limit of {padded - 1:,}"):
        codec.decode(data, tiny_model, max_pixels=padded - 1)
    with pytest.raises(FormatError, match="100x70 image, over the limit of 6,999 pixels"):
        codec.decode(data, tiny_model, max_pixels=100 * 70 - 1)

    assert container.DEFAULT_MAX_PIXELS == 100_000_000
    parsed = container.unpack(data)
    cases = [
        (10_001, 10_000, FormatError, "10001x10000 image, over the limit of 100,000,000 pixels"),
        (10**6, 10**6, FormatError, "over the limit of 100,000,000 pixels"),
        (2**35 - 1, 1, FormatError, "over the limit of 100,000,000 pixels"),
        (20_000, 5_000, InputError, "pads to 100,160,000 pixels, over the limit of 100,000,000"),  # 5008 rows
    ]
    for width, height, error, message in cases:
        forged = container.pack(dataclasses.replace(parsed.header, width=width, height=height), parsed.streams)
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(error, match=message):
                codec.decode(forged, tiny_model)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100_000, (width, height, peak)
        assert time.perf_counter() - start < 0.5


def test_a_tiny_stream_claiming_the_largest_image_is_refused_by_its_information(
    tiny_model: CodecModel, photo: Image.Image
) -> None:
    """10000x10000 is exactly the limit and pads to itself, so the header passes; the
    1-layer stream of a 100x70 photo cannot hold 390,625 cells, and the decoder stops
    after a few rows instead of filling them from its padding."""
    data = codec.encode(photo, tiny_model, layers=1).data
    parsed = container.unpack(data)
    forged = container.pack(dataclasses.replace(parsed.header, width=10_000, height=10_000), parsed.streams)
    assert container.parse_header(forged)[0].width == 10_000
    cells = (10_000 // tiny_model.config.layers[0].cell) ** 2
    assert cells == 390_625
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FormatError, match=f"more information than its {parsed.header.lengths[0]} bytes hold"):
            codec.decode(forged, tiny_model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0  # fuzz.TIME_LIMIT
    assert peak < 3 * 2 * 8 * cells  # the layer's int64 grids and parents, once each, and little else


def test_a_long_thin_header_is_refused_without_planning_its_tiles(tiny_model: CodecModel, photo: Image.Image) -> None:
    parsed = container.unpack(codec.encode(photo, tiny_model, 1).data)
    forged = container.pack(dataclasses.replace(parsed.header, width=100_000_000, height=1), parsed.streams)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="pads to 1,600,000,000 pixels"):
            codec.decode(forged, tiny_model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_encoding_refuses_images_over_the_pixel_limit(tiny_model: CodecModel, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (90, 120, 30)).save(big)
    with pytest.raises(InputError, match="2000x1000 is over the limit of 1,999,999 pixels"):
        codec.encode(big, tiny_model, 1, max_pixels=1_999_999)


def test_the_library_limit_is_set_with_max_pixels(tiny_model: CodecModel, photo: Image.Image) -> None:
    padded = padded_pixels(100, 70, tiny_model)
    data = ddncodec.encode(photo, 1, model=tiny_model, max_pixels=padded)
    with pytest.raises(
        ddncodec.InputError, match=f"100x70 image pads to 8,960 pixels, over the limit of {padded - 1:,}"
    ):
        ddncodec.encode(photo, 1, model=tiny_model, max_pixels=padded - 1)
    with pytest.raises(ddncodec.InputError, match="100x70 is over the limit of 6,999 pixels"):
        ddncodec.encode(photo, 1, model=tiny_model, max_pixels=100 * 70 - 1)
    assert ddncodec.decode(data, model=tiny_model, max_pixels=padded).size == (100, 70)
    with pytest.raises(ddncodec.InputError, match="pads to 8,960 pixels"):
        ddncodec.decode(data, model=tiny_model, max_pixels=padded - 1)
    with pytest.raises(ddncodec.FormatError, match="100x70 image, over the limit of 6,999 pixels"):
        ddncodec.decode(data, model=tiny_model, max_pixels=100 * 70 - 1)
    assert data == ddncodec.encode(photo, 1, model=tiny_model)  # the default limit: 100 million
    assert ddncodec.decode(data, model=tiny_model).size == (100, 70)


def test_the_cli_limit_is_set_with_max_pixels(
    tiny_model: CodecModel, tiny_model_path: Path, photo: Image.Image, tmp_path: Path
) -> None:
    ddn, png = tmp_path / "in.ddn", tmp_path / "in.png"
    ddn.write_bytes(codec.encode(photo, tiny_model, 1).data)
    photo.save(png)
    padded = padded_pixels(100, 70, tiny_model)
    for command, source, target in (("decode", ddn, "out.png"), ("encode", png, "out.ddn")):
        args = (command, source, "-o", tmp_path / target, "--model", tiny_model_path, "--max-pixels")
        for limit, message in ((6999, "over the limit of 6,999 pixels"), (padded - 1, "pads to 8,960 pixels")):
            code, stderr = cli(*args, str(limit))
            assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
            assert not (tmp_path / target).exists()
        assert cli(*args, str(padded))[0] == 0


def test_large_images_stream_through_the_network_one_tile_at_a_time(tiny_model: CodecModel, small_tiles: None) -> None:
    """With 32 px tiles a 200x150 image is 7 x 5 tiles: the network never sees more than
    one 32x32 tile, and the result decodes exactly."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    shapes: list[tuple[int, ...]] = []
    hook = tiny_model.network.layers[0].embed.register_forward_pre_hook(
        lambda _module, args: shapes.append(tuple(args[0].shape))
    )
    try:
        encoded = codec.encode(image, tiny_model, 8)
    finally:
        hook.remove()
    assert len(shapes) == 7 * 5
    assert max(s[0] for s in shapes) == 1
    assert max(s[2] * s[3] for s in shapes) * 8**2 <= 32 * 32  # embed sees the 8 px-stride grid
    assert np.array_equal(codec.decode_pixels(encoded.data, tiny_model)[0], encoded.pixels)
