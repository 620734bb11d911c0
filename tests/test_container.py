"""The .ddn byte format: round trips, prefixes, and every way a file can be broken."""

from __future__ import annotations

import binascii
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddncodec import container
from ddncodec.container import CorruptError, Header, NotDDNError, VersionError

FINGERPRINT = bytes.fromhex("f6d48267")


def make(width: int = 256, height: int = 192, mode: str = "RGB", streams: tuple[bytes, ...] = ()) -> bytes:
    streams = streams or (b"\x11" * 69, b"\x22" * 255, b"\x33" * 715)
    return container.pack(Header(FINGERPRINT, width, height, mode, tuple(map(len, streams))), streams)


def test_round_trip() -> None:
    streams = (b"abc", b"", b"defgh" * 40)
    parsed = container.unpack(make(5, 7, "L", streams))
    assert parsed.header == Header(FINGERPRINT, 5, 7, "L", (3, 0, 200))
    assert parsed.streams == streams
    assert parsed.complete
    assert parsed.checked


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 100_000),
    st.integers(1, 1000),
    st.sampled_from(container.MODES),
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
)
def test_round_trip_any_header(width: int, height: int, mode: str, streams: list[bytes]) -> None:
    parsed = container.unpack(make(width, height, mode, tuple(streams)))
    assert (parsed.header.width, parsed.header.height, parsed.header.mode) == (width, height, mode)
    assert parsed.streams == tuple(streams)


def test_typical_header_is_16_bytes_plus_lengths() -> None:
    """768x512, 13 layers of 100..16000 bytes: 16 fixed bytes, 1-2 per length, 4 trailer."""
    lengths = (40, 90, 120, 200, 300, 500, 900, 1500, 2500, 4000, 6000, 9000, 16000)
    data = make(768, 512, streams=tuple(b"x" * n for n in lengths))
    framing = len(data) - sum(lengths)
    length_bytes = sum(1 if n < 128 else 2 for n in lengths)
    assert framing == 16 + length_bytes + 4 == 43


def test_every_cut_at_a_layer_boundary_is_a_prefix_and_every_other_cut_is_refused() -> None:
    data = make(streams=(b"a" * 10, b"b" * 20, b"c" * 30))
    start = len(data) - 4 - 60
    boundaries = {start + 10: 1, start + 30: 2, start + 60: 3}
    for cut in range(len(data)):
        if cut in boundaries:
            parsed = container.unpack(data[:cut])
            assert len(parsed.streams) == boundaries[cut]
            assert parsed.streams == (b"a" * 10, b"b" * 20, b"c" * 30)[: boundaries[cut]]
            assert not parsed.checked
        else:
            with pytest.raises(container.FormatError):
                container.unpack(data[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    data = make(streams=(b"\x5a" * 9, b"\xa5" * 17))
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(container.FormatError):
            container.unpack(bytes(flipped))


def test_wrong_magic_version_and_trailing_data() -> None:
    data = make()
    with pytest.raises(NotDDNError, match=r"not a \.ddn file"):
        container.unpack(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(VersionError, match="version 2"):
        container.unpack(data[:3] + b"\x02" + data[4:])
    with pytest.raises(CorruptError, match="trailing data"):
        container.unpack(data + b"\x00")
    with pytest.raises(CorruptError, match="truncated"):
        container.unpack(data[:6])


def _forged(width: int, height: int, mode_byte: int = 0, layers: int = 1) -> bytes:
    """A header with a valid header CRC but arbitrary field values."""
    head = bytearray(container.MAGIC + bytes([container.VERSION]) + FINGERPRINT)
    head += container._varint(width) + container._varint(height) + bytes([mode_byte, layers]) + b"\x00" * layers
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    return bytes(head) + struct.pack(">I", zlib.crc32(bytes(head)))


def test_a_header_claiming_a_huge_image_is_refused_before_anything_else() -> None:
    with pytest.raises(CorruptError, match="1000000x1000000 image, over the limit"):
        container.unpack(_forged(10**6, 10**6))
    container.unpack(_forged(10_000, 10_000))  # exactly the default limit
    with pytest.raises(CorruptError, match="over the limit of 1,000 pixels"):
        container.unpack(make(), pixel_limit=1000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 0, "height": 5}, "image size 0x5"),
        ({"width": 5, "height": 5, "mode_byte": 7}, "unknown mode 7"),
        ({"width": 5, "height": 5, "layers": 0}, "no layers"),
    ],
)
def test_invalid_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(CorruptError, match=message):
        container.unpack(_forged(**fields))


def test_overlong_varint_is_refused() -> None:
    assert container._varint(300) == b"\xac\x02"
    with pytest.raises(CorruptError, match="over-long width"):
        container._read_varint(b"\x85\x00", 0, "width")
    with pytest.raises(CorruptError, match="longer than 5 bytes"):
        container._read_varint(b"\xff" * 6, 0, "width")
