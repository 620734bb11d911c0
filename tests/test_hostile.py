"""Hostile input: crafted files whose checksums are valid, outputs that are not plain
files, models that lie about their config, plugins that raise what they like."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from test_cli_codec import one_error_line
from test_hardening import rewrite_model

from ddncodec import codec, container, imageio, reading
from ddncodec.atomic import OutputError, write_atomically
from ddncodec.cli import main
from ddncodec.errors import FormatError, InputError, ModelError
from ddncodec.model import DDNConfig
from ddncodec.modelfile import CodecModel
from ddncodec.postfilter import FilterConfig, PostFilter

TINY = Path(__file__).parent / "data" / "tiny.safetensors"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def crafted(model: CodecModel, width: int, height: int, streams: list[bytes]) -> bytes:
    """A .ddn file with valid header and layer checksums around arbitrary streams."""
    header = container.Header(
        model.fingerprint[: container.FINGERPRINT_BYTES], width, height, "RGB", 0, tuple(len(s) for s in streams)
    )
    return container.pack(header, streams)


def test_a_tiny_file_claiming_a_huge_image_is_refused_within_a_few_rows(tiny_model: CodecModel) -> None:
    """The 27-byte attack: 10000x10000 claimed, 6 random bytes of stream, every checksum valid."""
    data = crafted(tiny_model, 10_000, 10_000, [bytes([0x5A, 0x13, 0xC7, 0x88, 0x21, 0x9E])])
    assert len(data) < 40
    start = time.perf_counter()
    with pytest.raises(FormatError, match="more information than its 6 bytes hold"):
        codec.decode_pixels(data, tiny_model)
    assert time.perf_counter() - start < 2.0


def test_a_valid_flat_image_still_decodes_from_a_few_bytes(tiny_model: CodecModel) -> None:
    """The information check must not refuse what the encoder really writes: a flat
    image codes to almost nothing, yet every cell is decoded."""
    pixels = np.full((256, 512, 3), 128, dtype=np.uint8)
    encoded = codec.encode_pixels(pixels, "RGB", tiny_model, codec.Rung(3, 1e5))
    assert encoded.bpp < 0.01
    decoded, _ = codec.decode_pixels(encoded.data, tiny_model)
    assert np.array_equal(decoded, encoded.pixels)


def test_padded_pixels_count_against_the_limit(tiny_model: CodecModel) -> None:
    """200000x1 pads to 16 rows with the tiny model: 3.2 MP of work for 0.2 MP claimed."""
    data = crafted(tiny_model, 200_000, 1, [b"\x00"])
    with pytest.raises(Exception, match="pads to 3,200,000 pixels"):
        codec.decode_pixels(data, tiny_model, max_pixels=1_000_000)


def test_a_walk_deeper_than_the_ladder_counts_its_layers_against_the_limit(
    tiny_model: CodecModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deep file costs more than its pixels: with WORK_LAYERS at 2, the tiny model's 3-layer
    walk of 64x64 counts as 4,096 x (3 / 2)^2 = 9,216 pixels, on both sides, and 2 layers as 4,096."""
    monkeypatch.setattr(imageio, "WORK_LAYERS", 2)
    image = np.full((64, 64, 3), 90, dtype=np.uint8)
    with pytest.raises(InputError, match="walks 3 layers \\(counted as 9,216\\), over the limit of 5,000"):
        codec.encode(Image.fromarray(image), tiny_model, layers=3, max_pixels=5_000)
    data = codec.encode(Image.fromarray(image), tiny_model, layers=3).data
    with pytest.raises(InputError, match="counted as 9,216"):
        codec.decode_pixels(data, tiny_model, max_pixels=5_000)
    decoded, _ = codec.decode_pixels(data, tiny_model, layers=2, max_pixels=5_000)  # a prefix is cheaper
    assert decoded.shape == (64, 64, 3)


# ---------------------------------------------------------------- outputs that are not plain files


def test_write_atomically_writes_into_a_fifo_instead_of_replacing_it(tmp_path: Path) -> None:
    """The library's rule (the command line refuses such outputs before any work)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(fifo.read_bytes()))
    reader.start()
    write_atomically(fifo, lambda tmp: tmp.write_bytes(b"DDN data"))
    reader.join(timeout=10)
    assert fifo.is_fifo()
    assert received == b"DDN data"


def test_a_socket_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(OutputError, match="not a regular file"):
            write_atomically(path, lambda tmp: tmp.write_bytes(b"x"))
        assert path.is_socket()
    finally:
        server.close()


def test_a_symlink_output_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "real.ddn"
    target.write_bytes(b"old")
    link = tmp_path / "link.ddn"
    link.symlink_to(target)
    write_atomically(link, lambda tmp: tmp.write_bytes(b"new"))
    assert link.is_symlink()
    assert target.read_bytes() == b"new"


def test_a_dangling_symlink_needs_force(tmp_path: Path, kodak_crop: Path, tiny_model_path: Path) -> None:
    link = tmp_path / "x.ddn"
    link.symlink_to(tmp_path / "missing.ddn")
    result = run("encode", kodak_crop, "-o", link, "--model", tiny_model_path)
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert not (tmp_path / "missing.ddn").exists()


def test_a_symlink_loop_is_one_line_not_a_traceback(tmp_path: Path, tiny_model_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    for args in (("encode", a, "-o", tmp_path / "o.ddn"), ("decode", a, "-o", tmp_path / "o.png")):
        result = run(*args, "--model", tiny_model_path)
        assert result.exit_code in (1, 2)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert len(result.output.strip().splitlines()) == 1


def test_no_overwrite_holds_when_another_writer_wins_the_race(tmp_path: Path) -> None:
    path = tmp_path / "out.ddn"

    def slow_write(tmp: Path) -> None:
        path.write_bytes(b"the other writer")  # appears while we are still writing
        tmp.write_bytes(b"ours")

    with pytest.raises(FileExistsError, match="already exists"):
        write_atomically(path, slow_write, overwrite=False)
    assert path.read_bytes() == b"the other writer"
    assert [p.name for p in tmp_path.iterdir()] == ["out.ddn"]


# ---------------------------------------------------------------- inputs that make plugins raise


def test_a_plugin_that_raises_not_implemented_is_one_line_and_the_batch_goes_on(
    tmp_path: Path, kodak_crop: Path, tiny_model_path: Path
) -> None:
    dds = tmp_path / "bad.dds"  # an unknown DDS pixel format: Pillow raises NotImplementedError
    header = b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
    header += struct.pack("<2I4s5I", 32, 0x4, b"XXXX", 0, 0, 0, 0, 0) + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    dds.write_bytes(header + bytes(64))
    out = tmp_path / "out"
    result = run("encode", dds, kodak_crop, "-o", out, "--model", tiny_model_path, "--quiet")
    assert result.exit_code == 2
    assert "NotImplementedError" in result.output
    assert "Traceback" not in result.output
    assert (out / f"{kodak_crop.stem}.ddn").is_file()


def test_decode_refuses_a_size_the_output_format_cannot_hold_before_decoding(
    tmp_path: Path, tiny_model: CodecModel, tiny_model_path: Path
) -> None:
    ddn = tmp_path / "wide.ddn"
    ddn.write_bytes(crafted(tiny_model, 17_000, 64, [b"\x00"]))  # the stream is never read
    start = time.perf_counter()
    result = run("decode", ddn, "-o", tmp_path / "wide.webp", "--model", tiny_model_path)
    assert result.exit_code == 2
    assert "does not fit in WEBP" in result.output
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "wide.webp").exists()


# ---------------------------------------------------------------- models that lie


@pytest.mark.parametrize(
    ("field", "value"), [("blocks", 10**9), ("cell", 2**20), ("cell", 4096), ("k", 10**7), ("channels", 10**6)]
)
def test_a_config_over_the_maxima_is_refused_before_anything_is_built(field: str, value: int) -> None:
    spec = {"cell": 16, "k": 8, "stride": 8, "channels": 16, "blocks": 1, "out_stride": 4, field: value}
    start = time.perf_counter()
    with pytest.raises(ValueError, match="over the limits"):
        DDNConfig(layers=(spec,))
    assert time.perf_counter() - start < 1


def test_the_fingerprint_covers_the_config(tiny_model: CodecModel) -> None:
    """Same weights, another config value that still fits them: another fingerprint, so
    its files are refused instead of decoded to a wrong image."""
    other = DDNConfig(layers=tiny_model.config.layers, chain_dropout=0.5)
    network = type(tiny_model.network)(other)
    network.load_state_dict(tiny_model.network.state_dict())
    twin = tiny_model.replace(network=network)
    assert twin.fingerprint != tiny_model.fingerprint
    data = codec.encode_pixels(np.zeros((32, 32, 3), np.uint8), "RGB", tiny_model, codec.Rung(1, 0.0)).data
    with pytest.raises(FormatError, match="another model"):
        codec.decode_pixels(data, twin)


def test_a_model_file_with_a_lying_config_is_a_model_error(tmp_path: Path, tiny_model: CodecModel) -> None:
    path = tmp_path / "tiny.safetensors"
    tiny_model.save(path)
    lie = '"blocks": 1000000000'
    rewrite_model(
        path, tmp_path / "lying.safetensors", lambda _t, m: m.update(config=m["config"].replace('"blocks": 1', lie, 1))
    )
    start = time.perf_counter()
    with pytest.raises(ModelError):
        codec.load_model(tmp_path / "lying.safetensors")
    assert time.perf_counter() - start < 2


def test_mode_i_values_outside_16_bits_are_refused_not_clipped(tiny_model: CodecModel) -> None:
    from PIL import Image

    from ddncodec.errors import InputError

    wide = Image.fromarray(np.full((32, 32), 70_000, dtype=np.int32), "I")
    with pytest.raises(InputError, match=r"70000\.\.70000, outside 0\.\.65535"):
        codec.encode(wide, tiny_model, 1)


def test_max_pixels_above_pillows_own_bomb_limit_takes_effect(tmp_path: Path) -> None:
    """Pillow refuses images over 2 x 89.5 MP by itself; --max-pixels above that must win."""
    from PIL import Image

    from ddncodec import imageio

    path = tmp_path / "big.png"
    Image.new("L", (20_000, 10_000)).save(path)  # 200 MP, a few hundred KB of PNG
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # Pillow alone
    with pytest.raises(Exception, match="over the limit of 100,000,000"):
        imageio.open_image(path, 100_000_000)
    image = imageio.open_image(path, 300_000_000)
    assert image.size == (20_000, 10_000)


# ---------------------------------------------------------------- files that are not files, inputs that never end


def finished(*args: str | Path, within: float = 10.0, fifos: tuple[Path, ...] = ()) -> Result:
    """``run`` that fails the test instead of hanging it: if the command has not ended
    within ``within`` s, every FIFO in ``fifos`` is opened from the other side (which
    unblocks an open or a read waiting on it) before the test fails."""
    results: list[Result] = []
    worker = threading.Thread(target=lambda: results.append(run(*args)), daemon=True)
    worker.start()
    worker.join(within)
    if worker.is_alive():
        for fifo in fifos:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"{' '.join(map(str, args))} was still running after {within} s")
    return results[0]


@pytest.fixture()
def ddn_file(tmp_path: Path, tiny_model: CodecModel) -> Path:
    path = tmp_path / "in.ddn"
    path.write_bytes(codec.encode_pixels(np.zeros((32, 32, 3), np.uint8), "RGB", tiny_model, codec.Rung(1, 0.0)).data)
    return path


@pytest.mark.parametrize("command", ["info", "decode", "encode"])
@pytest.mark.parametrize("kind", ["FIFO", "device"])
def test_an_input_that_is_a_fifo_or_a_device_is_refused_at_once(
    tmp_path: Path, tiny_model_path: Path, command: str, kind: str
) -> None:
    """``info /dev/zero`` read forever; a FIFO without a writer blocked forever."""
    source = Path("/dev/zero")
    if kind == "FIFO":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    out = tmp_path / ("o.ddn" if command == "encode" else "o.png")
    args = [command, source] if command == "info" else [command, source, "-o", out, "--model", tiny_model_path]
    start = time.perf_counter()
    line = one_error_line(finished(*args, fifos=(source,) if kind == "FIFO" else ()), 1)
    assert line == f"ddncodec: error: {source}: not a regular file but a {kind} (use - for stdin or stdout)"
    assert time.perf_counter() - start < 2
    assert not out.exists()


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize(("command", "output"), [("encode", "pipe.ddn"), ("decode", "pipe.png")])
def test_an_output_fifo_is_refused_instead_of_blocking(
    tmp_path: Path, tiny_model_path: Path, kodak_crop: Path, ddn_file: Path, command: str, output: str, force: list
) -> None:
    fifo = tmp_path / output
    os.mkfifo(fifo)
    source = kodak_crop if command == "encode" else ddn_file
    result = finished(command, source, "-o", fifo, "--model", tiny_model_path, *force, fifos=(fifo,))
    assert "not a regular file but a FIFO" in one_error_line(result, 1)
    assert fifo.is_fifo()


def test_an_output_fifo_inside_an_output_folder_is_refused(
    tmp_path: Path, kodak_crop: Path, tiny_model_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / f"{kodak_crop.stem}.ddn")
    result = finished(
        "encode", kodak_crop, "-o", out, "--model", tiny_model_path, "--force", fifos=(out / f"{kodak_crop.stem}.ddn",)
    )
    assert "not a regular file but a FIFO" in one_error_line(result, 1)


@contextlib.contextmanager
def stdout_into_a_pipe() -> Iterator[None]:
    """File descriptor 1 of this process is the write end of a pipe meanwhile, as in ``ddncodec ... | cat``."""
    read_end, write_end = os.pipe()
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        for fd in (saved, read_end, write_end):
            os.close(fd)


@pytest.mark.parametrize("output", ["/dev/stdout", "/dev/null"])
def test_dev_stdout_into_a_pipe_and_devices_are_refused_with_a_pointer_to_dash(
    ddn_file: Path, tiny_model_path: Path, output: str
) -> None:
    with stdout_into_a_pipe():
        result = finished("decode", ddn_file, "-o", output, "--force", "--model", tiny_model_path)
    kind = "FIFO" if output == "/dev/stdout" else "device"
    line = one_error_line(result, 1)
    assert line.endswith(f"not a regular file but a {kind} (use - for stdin or stdout)")


@pytest.mark.parametrize("kind", ["FIFO", "loop"])
@pytest.mark.parametrize("name", ["m.safetensors", "m"])
def test_a_model_path_that_is_a_fifo_or_a_symlink_loop_is_a_model_error(
    tmp_path: Path, kodak_crop: Path, kind: str, name: str
) -> None:
    model = tmp_path / name
    if kind == "FIFO":
        os.mkfifo(model)
    else:
        model.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(model)
    out = tmp_path / "o.ddn"
    result = finished("encode", kodak_crop, "-o", out, "--model", model, fifos=(model,) if kind == "FIFO" else ())
    line = one_error_line(result, 2)
    assert (
        "a FIFO, not a regular file" if kind == "FIFO" else "not found" if name == "m" else "symbolic links"
    ) in line
    assert not out.exists()


class Endless:
    """A stream that never ends (``/dev/zero`` as stdin), counting what is read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int) -> bytes:
        self.read_bytes += size
        return bytes(size)


def test_an_endless_stream_is_refused_after_its_limit_plus_one_byte() -> None:
    endless = Endless()
    with pytest.raises(InputError, match=r"^stdin: over 5,000 bytes"):
        reading.read_at_most(endless, 5_000, "stdin")
    assert endless.read_bytes == 5_001
    assert reading.read_at_most(io.BytesIO(bytes(5_000)), 5_000, "stdin") == bytes(5_000)


def test_stdin_and_files_are_read_up_to_the_limit_of_the_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound: BYTES_PER_PIXEL per pixel allowed, plus HEADROOM; a file over it is
    refused from its size, without reading it."""
    from ddncodec.cli import coding

    most = reading.limit(1_000)
    assert most == 16 * 1_000 + (16 << 20)
    endless = Endless()
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=endless))
    with pytest.raises(InputError, match=f"^stdin: over {most:,} bytes"):
        coding._read_file(Path("-"), 1_000)
    assert endless.read_bytes == most + 1
    sparse = tmp_path / "big.ddn"
    with sparse.open("wb") as f:
        f.truncate(most + 1)
    start = time.perf_counter()
    with pytest.raises(InputError, match=f"^{re.escape(str(sparse))}: over"):
        coding._read_file(sparse, 1_000)
    assert time.perf_counter() - start < 0.1


# ---------------------------------------------------------------- model files crafted to break the loader


def _set(key: str, value: object) -> Callable[[dict, dict], None]:
    return lambda _t, meta: meta.update({key: value if isinstance(value, str) else json.dumps(value)})


def _card(**fields: object) -> Callable[[dict, dict], None]:
    return lambda _t, meta: meta.update(card=json.dumps({**json.loads(meta["card"]), **fields}))


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _prior(value: torch.Tensor) -> Callable[[dict, dict], None]:
    return lambda tensors, _m: tensors.update({"priors.0": value})


GOOD_ON_VAL = [{"quality": q, "bpp": 0.1 * q, "psnr": 25.0 + q} for q in range(1, 9)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("card", [1, 2]), "model card must be a JSON object, not list"),
        (_set("card", 7), "model card must be a JSON object, not int"),
        (_set("card", _deep(100_000)), "model card is unreadable"),
        (_set("config", _deep(100_000)), "model config is unreadable"),
        (_set("config", '{"layers": ' + _deep(100_000) + "}"), "model config is unreadable"),
        (_set("ladder", _deep(100_000)), "ladder is unreadable"),
        (_set("ladder", [[1, 0.0]] * 3), "ladder needs 8 rungs"),
        (_set("ladder", [[1, 0.0]] * 7 + [[1e400, 0.0]]), "ladder is unreadable"),
        (_set("ladder", [[1, 0.0]] * 7 + [[1, 1e400]]), "ladder needs 8 rungs"),
        (_set("ladder", [[1, 0.0]] * 7 + [[1.5, 0.0]]), "ladder is unreadable .*whole number"),
        (_set("ladder", {"q1": 1}), "ladder is unreadable"),
        (_card(ladder_on_val=GOOD_ON_VAL[:7]), "ladder_on_val needs 8 entries"),
        (_card(ladder_on_val=[0.5] * 8), "ladder_on_val needs 8 entries"),
        (_card(ladder_on_val=[{**p, "bpp": 0} for p in GOOD_ON_VAL]), "ladder_on_val"),
        (_card(ladder_on_val=[{**p, "bpp": -1.0} for p in GOOD_ON_VAL]), "ladder_on_val"),
        (_card(ladder_on_val=[{**p, "bpp": "1"} for p in GOOD_ON_VAL]), "ladder_on_val"),
        (_card(ladder_on_val=[{**p, "bpp": 10**400} for p in GOOD_ON_VAL]), "ladder_on_val"),
        (_card(ladder_on_val=[{"bpp": p["bpp"]} for p in GOOD_ON_VAL]), "ladder_on_val"),
        (_card(ladder_on_val={"q1": GOOD_ON_VAL[0]}), "ladder_on_val"),
        (_set("config", '{"layers": [], "chain_dropout": "x"}'), "model config is unreadable"),
        (
            lambda _t, meta: meta.update(
                config=meta["config"].replace('"chain_dropout": 0.05', '"chain_dropout": "x"')
            ),
            "chain_dropout must be a probability",
        ),
        (_prior(torch.full((1, 8, 8), 2**61)), "must be positive integers"),
        (_prior(torch.full((1, 8, 8), 2**38)), r"sum past 1,099,511,627,776 \(2\*\*40\)"),
        (_prior(torch.ones(1, 8, 8)), "must be integers, not torch.float32"),
        (_prior(torch.ones(1, 8, 8, dtype=torch.bfloat16)), "must be integers"),
        (_prior(torch.ones(300, 8, 8, dtype=torch.int64)), r"of shape \(300, 8, 8\) is larger than \(256, 8, 8\)"),
        (_prior(torch.ones(8, 8, dtype=torch.int64)), r"must be positive integers of shape \(sets <= 256, 8, K >= 2\)"),
        (_set("format", "x" * 10_000), "not a ddncodec model"),
    ],
)
def test_a_hostile_model_file_is_one_line_and_exit_2(
    tmp_path: Path, kodak_crop: Path, edit: Callable[[dict, dict], object], message: str
) -> None:
    """Each was a traceback (exit 1) or NaN odds; now the loader refuses it with one line,
    whatever the command would have done with it (here ``--bpp``, which read the ladder
    and the card's validation rates)."""
    model = rewrite_model(TINY, tmp_path / "bad.safetensors", edit)
    out = tmp_path / "o.ddn"
    start = time.perf_counter()
    line = one_error_line(run("encode", kodak_crop, "-o", out, "--model", model, "--bpp", "0.5"), 2)
    assert time.perf_counter() - start < 2
    assert re.search(message, line), line
    assert len(line) < 500
    assert not out.exists()


def test_valid_validation_rates_and_a_prior_of_2_to_the_37_still_load(tmp_path: Path) -> None:
    """The bounds refuse what breaks the codec, not what a model may hold."""
    from ddncodec.modelfile import load

    def edit(tensors: dict, meta: dict) -> None:
        _card(ladder_on_val=GOOD_ON_VAL)(tensors, meta)
        tensors["priors.0"] = torch.full((1, 8, 8), 2**37, dtype=torch.int64)

    model = load(rewrite_model(TINY, tmp_path / "ok.safetensors", edit))
    assert model.card["ladder_on_val"] == GOOD_ON_VAL
    assert np.isfinite(model.priors.bits(0)).all()


def test_an_extra_4_gb_sparse_tensor_is_refused_by_name_without_reading_it(tmp_path: Path) -> None:
    """safetensors' own loader read (or failed to map) every tensor; the config's names and
    shapes are now checked before any tensor is read."""
    path = tmp_path / "sparse.safetensors"
    raw = TINY.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8 : 8 + size]), raw[8 + size :]
    header["junk"] = {"dtype": "U8", "shape": [4 << 30], "data_offsets": [len(data), len(data) + (4 << 30)]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)
        f.truncate(8 + len(text) + len(data) + (4 << 30))  # a hole: no disk, no page read
    out = tmp_path / "o.ddn"
    start = time.perf_counter()
    line = one_error_line(run("encode", TINY.parent / "kodak" / "kodim23_crop.png", "-o", out, "--model", path), 2)
    assert time.perf_counter() - start < 2
    assert "unexpected ['junk']" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("key", "filter_config", "fits"),
    [
        ("postfilter", FilterConfig(channels=8, blocks=1, cells=(16, 8)), True),
        ("postfilter", FilterConfig(channels=8, blocks=1, cells=(4,)), False),
        ("postfilter", FilterConfig(channels=8, blocks=1, cells=(16, 8, 4, 4)), False),
        ("postfilter", FilterConfig(channels=8, blocks=1, step=True), False),
        ("detailfilter", FilterConfig(channels=8, blocks=1, cells=(8,), step=True), True),
        ("detailfilter", FilterConfig(channels=8, blocks=1, cells=(16,), step=True), False),
    ],
)
def test_filter_cells_must_fit_the_network(
    tiny_model: CodecModel, tmp_path: Path, kodak_crop: Path, key: str, filter_config: FilterConfig, fits: bool
) -> None:
    """A post-filter reads the refined cells of the model's first layers: cell sizes that
    are not theirs crashed the encoder on a tensor shape (a traceback, exit 1)."""
    path = tmp_path / "m.safetensors"
    tiny_model.replace(**{key: PostFilter(filter_config)}).save(path)
    result = run("encode", kodak_crop, "-o", tmp_path / "o.ddn", "--model", path, "-q", "8")
    if fits:
        assert result.exit_code == 0, result.output
    else:
        assert "does not fit the model" in one_error_line(result, 2)
        assert not (tmp_path / "o.ddn").exists()


# ---------------------------------------------------------------- images whose header claims what padding makes huge


def tiny_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` gray pixels and whose data holds none
    of them (about 68 bytes): whatever decodes its pixels first fails or allocates them."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "padded"),
    [(16, 6_000_000, 100_000_000, "192,000,000"), (1, 3_000_000, 50_000_000, "96,000,000")],
)
def test_the_padded_size_is_refused_from_the_header_before_any_pixel_is_decoded(
    width: int, height: int, max_pixels: int, padded: str
) -> None:
    from ddncodec import imageio

    data = tiny_png(width, height)
    assert len(data) < 70
    start = time.perf_counter()
    with pytest.raises(
        InputError, match=f"image: a {width}x{height} image pads to {padded} pixels, over the limit of {max_pixels:,}$"
    ):
        imageio.open_image(data, max_pixels, unit=32)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(InputError, match="cannot read image"):  # unpadded it passes the check and decodes (and fails)
        imageio.open_image(data, max_pixels)
