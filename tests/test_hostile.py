"""Hostile input: crafted files whose checksums are valid, outputs that are not plain
files, models that lie about their config, plugins that raise what they like."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from ddncodec import codec, container
from ddncodec.atomic import OutputError, write_atomically
from ddncodec.cli import main
from ddncodec.errors import FormatError, ModelError
from ddncodec.model import DDNConfig
from ddncodec.modelfile import CodecModel


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


# ---------------------------------------------------------------- outputs that are not plain files


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path, kodak_crop: Path, tiny_model_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(fifo.read_bytes()))
    reader.start()
    result = run("encode", kodak_crop, "-o", fifo, "--force", "--model", tiny_model_path, "--quiet")
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo()
    assert received.startswith(container.MAGIC)
    assert container.unpack(bytes(received)).complete


def test_an_existing_fifo_needs_force(tmp_path: Path, kodak_crop: Path, tiny_model_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run("encode", kodak_crop, "-o", fifo, "--model", tiny_model_path)
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert fifo.is_fifo()


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
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    tiny_model.save(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    meta["config"] = meta["config"].replace('"blocks": 1', '"blocks": 1000000000', 1)
    save_file(tensors, str(tmp_path / "lying.safetensors"), metadata=meta)
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
