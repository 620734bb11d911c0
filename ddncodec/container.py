"""The .ddn byte format (spec: docs/FORMAT.md): a small header, one entropy-coded
stream per DDN layer (coarse to fine, so a prefix decodes), and a CRC32 trailer.

Every field is validated, and the header checksum verified, before the caller can
allocate anything from it: a corrupt length or a header that claims a 10⁶×10⁶ image
ends here, in a ``FormatError``.
"""

from __future__ import annotations

import binascii
import itertools
import struct
import zlib
from dataclasses import dataclass

from ddncodec.errors import FormatError

MAGIC = b"DDN"
VERSION = 1
FINGERPRINT_BYTES = 4  # prefix of the model's SHA-256: refuses a file made with another model
MODES = ("RGB", "L")  # the mode byte indexes this tuple; never reorder it
MAX_LAYERS = 255
DEFAULT_PIXEL_LIMIT = 100_000_000  # a header may claim at most this many pixels
_VARINT_MAX_BYTES = 5  # enough for 2**35 - 1, far more than any field needs
_HEADER_CRC_BYTES = 2
_TRAILER_BYTES = 4


class NotDDNError(FormatError):
    """The bytes are not a .ddn file at all (wrong magic)."""


class VersionError(FormatError):
    """A .ddn file of a format version this ddncodec cannot read."""


class CorruptError(FormatError):
    """A .ddn file that is truncated, bit-flipped or otherwise inconsistent."""


@dataclass(frozen=True)
class Header:
    fingerprint: bytes  # FINGERPRINT_BYTES of the model's SHA-256
    width: int
    height: int
    mode: str  # one of MODES: what the decoder hands back
    lengths: tuple[int, ...]  # bytes of each layer's stream, coarse to fine

    @property
    def layers(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class Container:
    """A parsed file: its header and the layer streams actually present."""

    header: Header
    streams: tuple[bytes, ...]  # all layers, or a prefix of them if the file was cut
    size: int  # bytes of the whole file
    checked: bool  # the trailer was present and its checksum matched

    @property
    def complete(self) -> bool:
        return len(self.streams) == self.header.layers


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, field: str) -> tuple[int, int]:
    value = 0
    for i in range(_VARINT_MAX_BYTES):
        if pos + i >= len(data):
            msg = f"truncated .ddn header (in the {field} field)"
            raise CorruptError(msg)
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                msg = f"corrupt .ddn header: over-long {field} field"
                raise CorruptError(msg)
            return value, pos + i + 1
    msg = f"corrupt .ddn header: {field} field longer than {_VARINT_MAX_BYTES} bytes"
    raise CorruptError(msg)


def _check_size(width: int, height: int, pixel_limit: int) -> None:
    if width < 1 or height < 1:
        msg = f"corrupt .ddn header: image size {width}x{height}"
        raise CorruptError(msg)
    if width * height > pixel_limit:
        msg = f".ddn header claims a {width}x{height} image, over the limit of {pixel_limit:,} pixels"
        raise CorruptError(msg)


def pack(header: Header, streams: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The complete file for ``header`` and its layer streams."""
    if tuple(len(s) for s in streams) != header.lengths:
        msg = "stream lengths do not match the header"
        raise ValueError(msg)
    if not 1 <= header.layers <= MAX_LAYERS or len(header.fingerprint) != FINGERPRINT_BYTES:
        msg = f"cannot pack {header.layers} layers with a {len(header.fingerprint)}-byte fingerprint"
        raise ValueError(msg)
    head = bytearray(MAGIC)
    head.append(VERSION)
    head += header.fingerprint
    head += _varint(header.width) + _varint(header.height)
    head.append(MODES.index(header.mode))
    head.append(header.layers)
    for length in header.lengths:
        head += _varint(length)
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    body = bytes(head) + b"".join(streams)
    return body + struct.pack(">I", zlib.crc32(body))


def parse_header(data: bytes, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> tuple[Header, int]:
    """The validated header and the offset where the first layer stream starts."""
    if not data.startswith(MAGIC):
        msg = "not a .ddn file (wrong magic bytes)"
        raise NotDDNError(msg)
    if len(data) <= len(MAGIC):
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    if data[3] != VERSION:
        msg = f"unsupported .ddn format version {data[3]} (this ddncodec reads version {VERSION})"
        raise VersionError(msg)
    pos = 4 + FINGERPRINT_BYTES
    if len(data) < pos + 4:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    fingerprint = bytes(data[4:pos])
    width, pos = _read_varint(data, pos, "width")
    height, pos = _read_varint(data, pos, "height")
    if len(data) < pos + 2:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    mode_byte, layers = data[pos], data[pos + 1]
    pos += 2
    lengths = []
    for i in range(layers):
        length, pos = _read_varint(data, pos, f"layer {i} length")
        lengths.append(length)
    if len(data) < pos + _HEADER_CRC_BYTES:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    (stored,) = struct.unpack_from(">H", data, pos)
    if stored != binascii.crc_hqx(bytes(data[:pos]), 0):
        msg = "corrupt .ddn header (checksum mismatch)"
        raise CorruptError(msg)
    pos += _HEADER_CRC_BYTES
    if mode_byte >= len(MODES):
        msg = f"corrupt .ddn header: unknown mode {mode_byte}"
        raise CorruptError(msg)
    if layers < 1:
        msg = "corrupt .ddn header: no layers"
        raise CorruptError(msg)
    _check_size(width, height, pixel_limit)
    return Header(fingerprint, width, height, MODES[mode_byte], tuple(lengths)), pos


def unpack(data: bytes, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Container:
    """Parse and validate a whole file.

    A file cut exactly at a layer boundary is a valid prefix (coarser image); any
    other length, or a checksum mismatch, is a ``CorruptError``."""
    header, start = parse_header(data, pixel_limit)
    body = len(data) - start
    total = sum(header.lengths)
    if body == total + _TRAILER_BYTES:
        (stored,) = struct.unpack_from(">I", data, len(data) - _TRAILER_BYTES)
        if stored != zlib.crc32(data[: len(data) - _TRAILER_BYTES]):
            msg = "corrupt .ddn file (checksum mismatch)"
            raise CorruptError(msg)
        present = header.layers
    else:
        ends = list(itertools.accumulate(header.lengths))
        if body not in ends:
            problem = "has trailing data" if body > total + _TRAILER_BYTES else "is truncated"
            msg = f".ddn file {problem}: {body} bytes after the header, a layer boundary or {total + _TRAILER_BYTES} expected"
            raise CorruptError(msg)
        present = max(i + 1 for i, end in enumerate(ends) if end == body)
    streams, pos = [], start
    for length in header.lengths[:present]:
        streams.append(bytes(data[pos : pos + length]))
        pos += length
    return Container(header, tuple(streams), len(data), checked=body == total + _TRAILER_BYTES)
