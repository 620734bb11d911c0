"""The .ddn byte format: round trips, prefixes, and every way a file can be broken."""

from __future__ import annotations

import binascii
import dataclasses
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddncodec import container
from ddncodec.container import COLOUR_BYTES, CorruptError, Header, NotDDNError, VersionError

FINGERPRINT = bytes.fromhex("f6d48267")
CRC = container.LAYER_CRC_BYTES


def make(
    width: int = 256, height: int = 192, mode: str = "RGB", streams: tuple[bytes, ...] = (), table_set: int = 0
) -> bytes:
    streams = streams or (b"\x11" * 69, b"\x22" * 255, b"\x33" * 715)
    return container.pack(Header(FINGERPRINT, width, height, mode, table_set, tuple(map(len, streams))), streams)


def test_round_trip() -> None:
    streams = (b"abc", b"", b"defgh" * 40)
    parsed = container.unpack(make(5, 7, "L", streams, table_set=6))
    assert parsed.header == Header(FINGERPRINT, 5, 7, "L", 6, (3, 0, 200))
    assert parsed.streams == streams
    assert parsed.complete


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 100_000),
    st.integers(1, 1000),
    st.sampled_from(container.MODES),
    st.integers(0, 255),
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
)
def test_round_trip_any_header(width: int, height: int, mode: str, table_set: int, streams: list[bytes]) -> None:
    parsed = container.unpack(make(width, height, mode, tuple(streams), table_set))
    assert (parsed.header.width, parsed.header.height, parsed.header.mode) == (width, height, mode)
    assert parsed.header.table_set == table_set
    assert parsed.streams == tuple(streams)
    assert parsed.complete


def test_a_table_set_over_a_byte_is_refused_by_pack() -> None:
    with pytest.raises(ValueError, match="table set 256 does not fit in a byte"):
        make(table_set=256)


def test_typical_header_is_17_bytes_plus_lengths_plus_four_per_layer() -> None:
    """768x512, 13 layers of 40..16000 bytes: 17 fixed bytes (magic 3, version 1,
    fingerprint 4, width 2, height 2, mode 1, table set 1, layer count 1, header CRC 2),
    1-2 per length, and a 4-byte CRC after each layer."""
    lengths = (40, 90, 120, 200, 300, 500, 900, 1500, 2500, 4000, 6000, 9000, 16000)
    data = make(768, 512, streams=tuple(b"x" * n for n in lengths))
    framing = len(data) - sum(lengths)
    length_bytes = sum(1 if n < 128 else 2 for n in lengths)
    assert length_bytes == 23
    assert framing == 17 + length_bytes + 4 * 13 == 92


def test_each_layer_is_followed_by_the_crc_of_every_byte_before_it() -> None:
    streams = (b"a" * 10, b"b" * 20, b"c" * 30)
    data = make(streams=streams)
    start = len(data) - 60 - 3 * CRC
    pos = start
    for stream in streams:
        assert data[pos : pos + len(stream)] == stream
        pos += len(stream)
        assert data[pos : pos + CRC] == struct.pack(">I", zlib.crc32(data[:pos]))
        pos += CRC
    assert pos == len(data)


def test_every_cut_at_a_layer_boundary_is_a_prefix_and_every_other_cut_is_refused() -> None:
    streams = (b"a" * 10, b"b" * 20, b"c" * 30)
    data = make(streams=streams)
    start = len(data) - 60 - 3 * CRC
    boundaries = {start + 10 + CRC: 1, start + 30 + 2 * CRC: 2, start + 60 + 3 * CRC: 3}
    assert max(boundaries) == len(data)
    prefixes = 0
    for cut in range(len(data) + 1):
        if cut in boundaries:
            parsed = container.unpack(data[:cut])
            assert len(parsed.streams) == boundaries[cut]
            assert parsed.streams == streams[: boundaries[cut]]
            assert parsed.complete == (boundaries[cut] == 3)
            prefixes += 1
        else:
            with pytest.raises(container.FormatError):
                container.unpack(data[:cut])
    assert prefixes == 3


def test_every_single_bit_flip_is_detected() -> None:
    data = make(streams=(b"\x5a" * 9, b"\xa5" * 17))
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(container.FormatError):
            container.unpack(bytes(flipped))


def test_every_bit_flip_in_a_file_cut_at_a_layer_boundary_is_detected() -> None:
    """Format 1 had one trailer CRC, lost when the file was cut: damage to the kept layers
    of a prefix went unseen. Now each kept layer carries its own CRC."""
    streams = (b"\x5a" * 9, b"\xa5" * 17, b"\x3c" * 5)
    data = make(streams=streams)
    start = len(data) - sum(map(len, streams)) - 3 * CRC
    for kept in (1, 2):
        prefix = data[: start + sum(map(len, streams[:kept])) + kept * CRC]
        assert container.unpack(prefix).streams == streams[:kept]
        for bit in range(8 * len(prefix)):
            flipped = bytearray(prefix)
            flipped[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(container.FormatError):
                container.unpack(bytes(flipped))
    # A flip inside the first stream of a two-layer prefix names that layer.
    prefix = bytearray(data[: start + 9 + 17 + 2 * CRC])
    prefix[start + 3] ^= 0x10
    with pytest.raises(CorruptError, match="checksum mismatch in layer 0"):
        container.unpack(bytes(prefix))


def version_1_file(streams: tuple[bytes, ...] = (b"abc", b"defg")) -> bytes:
    """A file of format version 1, byte for byte: no table-set byte, one CRC-32 trailer."""
    head = bytearray(container.MAGIC + b"\x01" + FINGERPRINT)
    head += container._varint(256) + container._varint(192) + bytes([0, len(streams)])
    head += b"".join(container._varint(len(s)) for s in streams)
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    body = bytes(head) + b"".join(streams)
    return body + struct.pack(">I", zlib.crc32(body))


def test_wrong_magic_version_and_trailing_data() -> None:
    data = make()
    with pytest.raises(NotDDNError, match=r"not a \.ddn file"):
        container.unpack(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(VersionError, match=r"unsupported \.ddn format version 1 "):
        container.unpack(version_1_file())
    newer = container.DC_SIGNS_VERSION + 1  # the first version this ddncodec cannot read
    with pytest.raises(VersionError, match=f"version {newer} "):
        container.unpack(data[:3] + bytes([newer]) + data[4:])
    with pytest.raises(CorruptError, match="trailing data"):
        container.unpack(data + b"\x00")
    with pytest.raises(CorruptError, match="truncated"):
        container.unpack(data[:6])


def _forged(width: int, height: int, mode_byte: int = 0, layers: int = 1, table_set: int = 0) -> bytes:
    """A file of empty layer streams with valid CRCs but arbitrary header field values."""
    head = bytearray(container.MAGIC + bytes([container.VERSION]) + FINGERPRINT)
    head += container._varint(width) + container._varint(height) + bytes([mode_byte, table_set, layers])
    head += b"\x00" * layers
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    for _ in range(layers):
        head += struct.pack(">I", zlib.crc32(bytes(head)))
    return bytes(head)


def test_a_header_claiming_a_huge_image_is_refused_before_anything_else() -> None:
    with pytest.raises(CorruptError, match="1000000x1000000 image, over the limit"):
        container.unpack(_forged(10**6, 10**6))
    parsed = container.unpack(_forged(10_000, 10_000, layers=2, table_set=255))  # exactly the default limit
    assert parsed.header.table_set == 255
    assert parsed.streams == (b"", b"")
    with pytest.raises(CorruptError, match="over the limit of 1,000 pixels"):
        container.unpack(make(), max_pixels=1000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 0, "height": 5}, "image size 0x5"),
        ({"width": 5, "height": 5, "mode_byte": 7}, "unknown mode 7"),
        ({"width": 5, "height": 5, "layers": 0}, "0 layers in a version 2 file"),
    ],
)
def test_invalid_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(CorruptError, match=message):
        container.unpack(_forged(**fields))


def _painted(layers: tuple[bytes, ...] = ()) -> bytes:
    header = Header(
        FINGERPRINT, 640, 480, "RGB", 0, tuple(map(len, layers)), detail_step=9, detail_length=5, smooth_blocks=True
    )
    return container.pack(header, layers, b"plane")


def test_a_file_of_smooth_blocks_alone_has_no_layer_and_is_version_7() -> None:
    data = _painted()
    assert data[3] == container.PAINTED_VERSION
    parsed = container.unpack(data)
    assert (parsed.header.layers, parsed.streams, parsed.detail) == (0, (), b"plane")
    assert parsed.complete and parsed.header.smooth_blocks
    assert _painted((b"layer",))[3] == container.SMOOTH_DETAIL_VERSION  # with a layer: version 6, as before
    for cut in range(len(data)):  # no prefix of it is a file: there is no layer to cut after
        with pytest.raises((CorruptError, NotDDNError)):
            container.unpack(data[:cut])
    with pytest.raises(ValueError, match="only a file of smooth blocks can have no layers"):
        container.pack(Header(FINGERPRINT, 640, 480, "RGB", 0, (), detail_step=9, detail_length=5), (), b"plane")


def test_a_version_7_header_with_layers_is_refused() -> None:
    data = bytearray(_painted((b"layer",)))
    data[3] = container.PAINTED_VERSION
    data[: data.index(b"layer")] = _rehashed(bytes(data[: data.index(b"layer")]))
    with pytest.raises(CorruptError, match="1 layers in a version 7 file"):
        container.unpack(bytes(data))


def _rehashed(header: bytes) -> bytes:
    """A header with its CRC-16 recomputed over the bytes before it."""
    body = header[: -container._HEADER_CRC_BYTES]
    return body + struct.pack(">H", binascii.crc_hqx(body, 0))


def test_overlong_varint_is_refused() -> None:
    assert container._varint(300) == b"\xac\x02"
    with pytest.raises(CorruptError, match="over-long width"):
        container._read_varint(b"\x85\x00", 0, "width")
    with pytest.raises(CorruptError, match="longer than 5 bytes"):
        container._read_varint(b"\xff" * 6, 0, "width")


def test_colour_corrections_make_version_10_with_or_without_a_detail_stream() -> None:
    streams, detail = (b"\x11" * 40, b"\x22" * 90), b"\x33" * 300
    colour, walk = bytes(range(223, 256)), bytes(range(COLOUR_BYTES))
    plain = Header(FINGERPRINT, 256, 192, "RGB", 0, (40, 90), colour=colour)
    detailed = Header(FINGERPRINT, 256, 192, "RGB", 0, (40, 90), True, 37, 300, True, False, True, True, True, colour)
    for header, stream in (
        (plain, b""),
        (detailed, detail),
        (dataclasses.replace(detailed, walk_colour=walk), detail),
        (dataclasses.replace(detailed, colour=b"", walk_colour=walk), detail),
    ):
        data = container.pack(header, streams, stream)
        assert data[3] == container.COLOUR_VERSION
        parsed = container.unpack(data)
        assert parsed.header == header and parsed.streams == streams and parsed.detail == (stream or None)
        without = container.pack(dataclasses.replace(header, colour=b"", walk_colour=b""), streams, stream)
        added = COLOUR_BYTES * (bool(header.colour) + bool(header.walk_colour))
        assert len(data) == len(without) + added and without[3] in (container.VERSION, container.PREDICTED_VERSION)
        with pytest.raises(CorruptError, match=r"truncated \.ddn header"):  # cut inside a correction
            container.unpack(data[: container.parse_header(data)[1] - 5])
    with pytest.raises(ValueError, match=f"colour correction is {COLOUR_BYTES} bytes"):
        container.pack(dataclasses.replace(plain, colour=b"\x01" * 11), streams)
    with pytest.raises(ValueError, match="the walk's needs one"):  # no detail stream
        container.pack(dataclasses.replace(plain, walk_colour=walk), streams)
    with pytest.raises(ValueError, match=f"colour correction is {COLOUR_BYTES} bytes"):  # version 8's detail stream
        container.pack(dataclasses.replace(detailed, predicted=False), streams, detail)


def test_version_11_levels_make_version_11_with_any_colour_corrections() -> None:
    """Version 11 is version 10's header with its corrections optional; its levels need
    version 9's detail stream, and a version 11 header without a detail stream is refused."""
    streams, detail = (b"\x11" * 40, b"\x22" * 90), b"\x33" * 300
    colour, walk = bytes(range(223, 256)), bytes(range(COLOUR_BYTES))
    eleven = Header(FINGERPRINT, 256, 192, "RGB", 0, (40, 90), True, 8, 300, True, False, True, True, True)
    eleven = dataclasses.replace(eleven, dc_signs=True)
    for corrections in ({}, {"colour": colour}, {"walk_colour": walk}, {"colour": colour, "walk_colour": walk}):
        header = dataclasses.replace(eleven, **corrections)
        data = container.pack(header, streams, detail)
        assert data[3] == container.DC_SIGNS_VERSION
        parsed = container.unpack(data)
        assert parsed.header == header and parsed.detail == detail
        earlier = container.pack(dataclasses.replace(header, dc_signs=False), streams, detail)
        assert len(earlier) == len(data) and earlier[3] in (container.PREDICTED_VERSION, container.COLOUR_VERSION)
    with pytest.raises(ValueError, match="version 11's levels"):  # version 8's detail stream
        container.pack(dataclasses.replace(eleven, predicted=False), streams, detail)
    with pytest.raises(ValueError, match="version 11's levels"):  # no detail stream at all
        container.pack(Header(FINGERPRINT, 256, 192, "RGB", 0, (40, 90), dc_signs=True), streams)
    plain = container.pack(Header(FINGERPRINT, 256, 192, "RGB", 0, (40, 90)), streams)
    head_end = container.parse_header(plain)[1]
    forged = bytearray(plain[: head_end - 2])
    forged[3] = container.DC_SIGNS_VERSION
    forged += struct.pack(">H", binascii.crc_hqx(bytes(forged), 0)) + plain[head_end:]
    with pytest.raises(CorruptError, match="version 11 file without a detail stream"):
        container.unpack(bytes(forged))
