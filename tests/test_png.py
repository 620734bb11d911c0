"""The PNG writer: Pillow reads back the very pixels, the zlib stream checks out whole, and the
bytes are the same for any thread count and strip size."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ddncodec import png

DATA = Path(__file__).parent / "data"


def _read(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def _idat(data: bytes) -> bytes:
    """The zlib stream of a PNG's IDAT chunks, each chunk's CRC checked on the way."""
    assert data.startswith(png.SIGNATURE)
    at, stream = len(png.SIGNATURE), b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IDAT":
            stream += body
        at += 12 + length
    return stream


@pytest.fixture()
def photo() -> np.ndarray:
    with Image.open(DATA / "kodak" / "kodim23_crop.png") as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("strip_bytes", [1, 1000, png.STRIP_BYTES])
def test_pillow_reads_back_the_pixels_for_any_strip_size_and_thread_count(
    photo: np.ndarray, strip_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(png, "STRIP_BYTES", strip_bytes)
    written = {threads: png.encode(photo, threads) for threads in (1, 2, 3)}
    assert len(set(written.values())) == 1
    assert np.array_equal(_read(written[1]), photo)
    gray = photo[..., 1].copy()
    assert np.array_equal(_read(png.encode(gray, 2)), gray)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (1, 700, 3), (700, 1), (5, 3, 3)])
def test_odd_shapes(shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png, "STRIP_BYTES", 7)  # a strip a row
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(_read(png.encode(pixels, 2)), pixels)


def test_the_zlib_stream_is_whole_and_its_checksum_right(photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """zlib itself checks the joined stream's Adler-32 (Pillow stops at the last row and does not)."""
    monkeypatch.setattr(png, "STRIP_BYTES", 5000)
    data = png.encode(photo, 2)
    rows = np.frombuffer(zlib.decompress(_idat(data)), dtype=np.uint8).reshape(photo.shape[0], -1)
    assert (rows[:, 0] == 2).all()  # the Up filter on every row
    assert np.array_equal(np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8), photo.reshape(photo.shape[0], -1))


@given(st.binary(max_size=300), st.binary(max_size=70000))
def test_adler_of_joined_bytes(first: bytes, second: bytes) -> None:
    assert png._adler_joined(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.uint16), np.zeros(4, np.uint8)])
def test_other_arrays_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        png.encode(pixels)
