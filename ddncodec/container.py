"""The .ddn byte format (spec: docs/FORMAT.md): a small header, then one entropy-coded
stream per DDN layer (coarse to fine, so a prefix decodes) and, at the top rungs, one
detail stream (``detail``), each followed by a CRC-32 of the whole file up to that
point, so a file cut after any layer is still verified.

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

from ddncodec.colour import BYTES as COLOUR_BYTES
from ddncodec.errors import FormatError
from ddncodec.ladder import MAX_DETAIL_STEP

MAGIC = b"DDN"
VERSION = 2  # files without a detail stream: byte for byte what readers of version 2 read
DETAIL_VERSION = 3  # files with one (version 2 readers refuse them, as they should)
FILTERED_DETAIL_VERSION = 4  # version 3's layout, decoded through the model's detail filter
ROWS_DETAIL_VERSION = 5  # the detail stream coded row by row and class by class (``levels.Layout``)
SMOOTH_DETAIL_VERSION = 6  # version 5's, the detail stream opening with the smooth blocks (``smooth``)
PAINTED_VERSION = 7  # version 6's with no layer at all: every block smooth, the image its planes alone
SUMMARISED_VERSION = 8  # version 6's, the levels coded with their blocks' last bands (``levels.Layout.SUMMARISED``)
PREDICTED_VERSION = 9  # version 8's, blocks' low frequencies predicted from the DCs around them (``detail.surface``)
COLOUR_VERSION = 10  # version 9's (or 2's, without a detail stream) with colour corrections in the header (``colour``)
DC_SIGNS_VERSION = 11  # version 10's header, corrections optional; the levels in ``levels.Layout.DC_SIGNS``
_READS = (
    VERSION,
    DETAIL_VERSION,
    FILTERED_DETAIL_VERSION,
    ROWS_DETAIL_VERSION,
    SMOOTH_DETAIL_VERSION,
    PAINTED_VERSION,
    SUMMARISED_VERSION,
    PREDICTED_VERSION,
    COLOUR_VERSION,
    DC_SIGNS_VERSION,
)
_SMOOTH_VERSIONS = (SMOOTH_DETAIL_VERSION, PAINTED_VERSION, SUMMARISED_VERSION, PREDICTED_VERSION)
FINGERPRINT_BYTES = 4  # prefix of the model's SHA-256: refuses a file made with another model
MODES = ("RGB", "L")  # the mode byte's low bits index this tuple; never reorder it
_FILTERED = 0x80  # the mode byte's top bit: run the model's post-filter
_DETAIL = 0x40  # versions 3 to 5 only: a detail stream follows the layers
_DETAIL_FILTERED = 0x20  # versions 5, 6 and 8 to 11 only: run the model's detail filter after the detail layer
_COLOUR = 0x10  # versions 10 and 11 only: the header holds the decode's colour correction
_WALK_COLOUR = 0x08  # versions 10 and 11 only: the header holds the walk's colour correction (before the detail layer)
_CORRECTED_VERSIONS = (COLOUR_VERSION, DC_SIGNS_VERSION)
MAX_LAYERS = 255
DEFAULT_MAX_PIXELS = 100_000_000  # a header may claim at most this many pixels
_VARINT_MAX_BYTES = 5  # enough for 2**35 - 1, far more than any field needs
_HEADER_CRC_BYTES = 2
LAYER_CRC_BYTES = 4  # after every layer stream: CRC-32 of all bytes before it


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
    table_set: int  # which of the model's entropy table sets coded the streams
    lengths: tuple[int, ...]  # bytes of each layer's stream (its CRC not counted), coarse to fine
    filtered: bool = False  # the decoder runs the model's post-filter (the encoder chose it)
    detail_step: int = 0  # quantiser step of the detail stream, 1..255; 0: the file has none
    detail_length: int = 0  # bytes of the detail stream (its CRC not counted)
    detail_filtered: bool = False  # the decoder runs the model's detail filter after the detail layer
    legacy_detail: bool = False  # the detail stream is in the layout of versions 3 and 4 (``levels.Layout.CHANNELS``)
    smooth_blocks: bool = False  # the detail stream opens with the smooth blocks (version 6 on)
    summarised: bool = False  # its levels are coded with their blocks' last bands (version 8 on)
    predicted: bool = False  # its blocks' lowest frequencies start from the DCs around them (version 9 on)
    colour: bytes = b""  # the decode's colour correction, applied last (``colour.Correction``, version 10 on)
    walk_colour: bytes = b""  # the walk's, applied before the detail layer (version 10 on, with a detail stream)
    dc_signs: bool = False  # its levels' DC classes lean by the signs around, escapes by bit length (version 11)

    @property
    def layers(self) -> int:
        return len(self.lengths)

    @property
    def version(self) -> int:
        """The format version this header is written as (``_version``)."""
        return _version(self)


@dataclass(frozen=True)
class Container:
    """A parsed file: its header and the layer streams actually present."""

    header: Header
    streams: tuple[bytes, ...]  # all layers, or a prefix of them if the file was cut
    size: int  # bytes of the whole file
    detail: bytes | None = None  # the detail stream, if the header has one and the file was not cut

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


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        msg = f"corrupt .ddn header: image size {width}x{height}"
        raise CorruptError(msg)
    if width * height > max_pixels:
        msg = f".ddn header claims a {width}x{height} image, over the limit of {max_pixels:,} pixels"
        raise CorruptError(msg)


def pack(header: Header, streams: list[bytes] | tuple[bytes, ...], detail: bytes = b"") -> bytes:
    """The complete file for ``header``, its layer streams and its detail stream (if its step is set)."""
    _check_packable(header, streams, detail)
    out = bytearray(_header_bytes(header))
    for stream in [*streams, detail] if header.detail_step else streams:
        out += stream
        out += struct.pack(">I", zlib.crc32(out))
    return bytes(out)


def _check_packable(header: Header, streams: list[bytes] | tuple[bytes, ...], detail: bytes) -> None:
    """A ValueError for a header the format cannot hold or that does not describe the
    streams: the caller's bug, refused before a byte is written."""
    if tuple(len(s) for s in streams) != header.lengths or len(detail) != header.detail_length:
        msg = "stream lengths do not match the header"
        raise ValueError(msg)
    if not 0 <= header.detail_step <= MAX_DETAIL_STEP or (header.detail_length > 0 and not header.detail_step):
        msg = f"cannot pack a detail stream of step {header.detail_step}"
        raise ValueError(msg)
    if not 0 <= header.layers <= MAX_LAYERS or len(header.fingerprint) != FINGERPRINT_BYTES:
        msg = f"cannot pack {header.layers} layers with a {len(header.fingerprint)}-byte fingerprint"
        raise ValueError(msg)
    if not header.layers and not header.smooth_blocks:
        msg = "only a file of smooth blocks can have no layers"
        raise ValueError(msg)
    if header.detail_filtered and not header.detail_step:
        msg = "cannot pack a detail filter flag without a detail stream"
        raise ValueError(msg)
    if header.smooth_blocks and (header.legacy_detail or not header.detail_step):
        msg = "smooth blocks open a detail stream of version 6 on only"
        raise ValueError(msg)
    if header.summarised and not (header.smooth_blocks and header.layers):
        msg = "summarised levels follow the smooth blocks of a file with layers (version 8 on) only"
        raise ValueError(msg)
    if header.predicted and not header.summarised:
        msg = "predicted low frequencies come with summarised levels (version 9) only"
        raise ValueError(msg)
    if header.dc_signs and not header.predicted:
        msg = "version 11's levels come with predicted low frequencies (version 9 on) only"
        raise ValueError(msg)
    corrections = [c for c in (header.colour, header.walk_colour) if c]
    if corrections and (
        any(len(c) != COLOUR_BYTES for c in corrections)
        or not header.layers
        or (header.detail_step and not header.predicted)
        or (header.walk_colour and not header.detail_step)
    ):
        msg = (
            f"a colour correction is {COLOUR_BYTES} bytes, in a file with layers whose detail stream (if any) is "
            "version 9's; the walk's needs one"
        )
        raise ValueError(msg)
    if not 0 <= header.table_set <= 255:
        msg = f"table set {header.table_set} does not fit in a byte"
        raise ValueError(msg)


def _version(header: Header) -> int:
    """The format version of ``header``'s layout: 2 without a detail stream (what version 2
    readers read), 3 or 4 for the detail layout of those versions, 6 with smooth blocks
    (7 if they are all there is: no layer; 8 with summarised levels, 9 with predicted low
    frequencies too), else 5; 10 for any with a colour correction; 11 for any whose
    detail stream's levels are coded in ``levels.Layout.DC_SIGNS`` (what the encoder writes)."""
    if header.dc_signs:
        return DC_SIGNS_VERSION
    if header.colour or header.walk_colour:
        return COLOUR_VERSION
    if not header.detail_step:
        return VERSION
    if header.legacy_detail:
        return FILTERED_DETAIL_VERSION if header.detail_filtered else DETAIL_VERSION
    if header.smooth_blocks and not header.layers:
        return PAINTED_VERSION
    if header.smooth_blocks:
        if header.predicted:
            return PREDICTED_VERSION
        return SUMMARISED_VERSION if header.summarised else SMOOTH_DETAIL_VERSION
    return ROWS_DETAIL_VERSION


def _mode_byte(header: Header) -> int:
    """The mode's index in MODES, with the post-filter, detail and detail-filter flags on top."""
    flags = (_FILTERED if header.filtered else 0) | (_DETAIL if header.detail_step else 0)
    if header.detail_filtered and not header.legacy_detail:
        flags |= _DETAIL_FILTERED
    flags |= (_COLOUR if header.colour else 0) | (_WALK_COLOUR if header.walk_colour else 0)
    return MODES.index(header.mode) | flags


def _header_bytes(header: Header) -> bytes:
    """The header as the file starts, its CRC-16 last."""
    head = bytearray(MAGIC)
    head.append(_version(header))
    head += header.fingerprint
    head += _varint(header.width) + _varint(header.height)
    head += bytes((_mode_byte(header), header.table_set, header.layers))
    for length in header.lengths:
        head += _varint(length)
    if header.detail_step:
        head += bytes((header.detail_step,)) + _varint(header.detail_length)
    head += header.walk_colour + header.colour
    head += struct.pack(">H", binascii.crc_hqx(bytes(head), 0))
    return bytes(head)


def parse_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Header, int]:
    """The validated header and the offset where the first layer stream starts."""
    if not data.startswith(MAGIC):
        msg = "not a .ddn file (wrong magic bytes)"
        raise NotDDNError(msg)
    if len(data) <= len(MAGIC):
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    version = data[3]
    if version not in _READS:
        msg = f"unsupported .ddn format version {version} (this ddncodec reads versions {', '.join(map(str, _READS))})"
        raise VersionError(msg)
    pos = 4 + FINGERPRINT_BYTES
    if len(data) < pos + 4:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    fingerprint = bytes(data[4:pos])
    width, pos = _read_varint(data, pos, "width")
    height, pos = _read_varint(data, pos, "height")
    if len(data) < pos + 3:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    mode_byte, table_set, layers = data[pos], data[pos + 1], data[pos + 2]
    pos += 3
    lengths = []
    for i in range(layers):
        length, pos = _read_varint(data, pos, f"layer {i} length")
        lengths.append(length)
    has_detail = version != VERSION and bool(mode_byte & _DETAIL)
    detail_step = detail_length = 0
    if has_detail:
        if len(data) <= pos:
            msg = "truncated .ddn header"
            raise CorruptError(msg)
        detail_step = data[pos]
        detail_length, pos = _read_varint(data, pos + 1, "detail length")
    colour, walk_colour, layout = b"", b"", version  # layout: the version whose streams the file holds
    if version in _CORRECTED_VERSIONS:
        corrections = []
        for flag in (_WALK_COLOUR, _COLOUR):
            present = bool(mode_byte & flag)
            corrections.append(bytes(data[pos : pos + COLOUR_BYTES * present]))
            pos += COLOUR_BYTES * present
        walk_colour, colour = corrections
        mode_byte &= ~(_WALK_COLOUR | _COLOUR)
        layout = PREDICTED_VERSION if has_detail or version == DC_SIGNS_VERSION else VERSION
    if len(data) < pos + _HEADER_CRC_BYTES:
        msg = "truncated .ddn header"
        raise CorruptError(msg)
    (stored,) = struct.unpack_from(">H", data, pos)
    if stored != binascii.crc_hqx(bytes(data[:pos]), 0):
        msg = "corrupt .ddn header (checksum mismatch)"
        raise CorruptError(msg)
    pos += _HEADER_CRC_BYTES
    filtered = bool(mode_byte & _FILTERED)
    detail_filtered = version == FILTERED_DETAIL_VERSION
    if layout in (ROWS_DETAIL_VERSION, *_SMOOTH_VERSIONS):
        detail_filtered = bool(mode_byte & _DETAIL_FILTERED)
        mode_byte &= ~_DETAIL_FILTERED
    mode_byte &= ~(_FILTERED | (_DETAIL if has_detail else 0))
    if mode_byte >= len(MODES):
        msg = f"corrupt .ddn header: unknown mode {mode_byte}"
        raise CorruptError(msg)
    if (version == COLOUR_VERSION and not (colour or walk_colour)) or (walk_colour and not has_detail):
        msg = "corrupt .ddn header: a version 10 file without its colour correction"
        raise CorruptError(msg)
    if (layers == 0) != (version == PAINTED_VERSION):
        msg = f"corrupt .ddn header: {layers} layers in a version {version} file"
        raise CorruptError(msg)
    if has_detail and detail_step == 0:
        msg = "corrupt .ddn header: detail step 0"
        raise CorruptError(msg)
    if layout != VERSION and not has_detail:
        msg = f"corrupt .ddn header: a version {version} file without a detail stream"
        raise CorruptError(msg)
    _check_size(width, height, max_pixels)
    header = Header(
        fingerprint,
        width,
        height,
        MODES[mode_byte],
        table_set,
        tuple(lengths),
        filtered,
        detail_step,
        detail_length,
        detail_filtered,
        version in (DETAIL_VERSION, FILTERED_DETAIL_VERSION),
        layout in _SMOOTH_VERSIONS,
        layout in (SUMMARISED_VERSION, PREDICTED_VERSION),
        layout == PREDICTED_VERSION,
        colour,
        walk_colour,
        version == DC_SIGNS_VERSION,
    )
    return header, pos


def unpack(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    """Parse and validate a whole file.

    A file cut exactly after a layer's checksum is a valid prefix (coarser image, without
    the detail stream); any other length, or any checksum mismatch, is a ``CorruptError``."""
    header, start = parse_header(data, max_pixels)
    ends = list(itertools.accumulate(length + LAYER_CRC_BYTES for length in header.lengths))
    layers_end = ends[-1] if ends else 0
    complete = layers_end + (header.detail_length + LAYER_CRC_BYTES if header.detail_step else 0)
    body = len(data) - start
    if body not in ends and body != complete:
        problem = "has trailing data" if body > complete else "is truncated"
        msg = f".ddn file {problem}: {body} bytes after the header, a layer boundary (at most {complete}) expected"
        raise CorruptError(msg)
    with_detail = body > layers_end  # only the complete file of a header with a detail stream
    present = header.layers if with_detail else ends.index(body) + 1
    streams, pos = [], start
    for i, length in enumerate([*header.lengths[:present], *([header.detail_length] if with_detail else [])]):
        end = pos + length
        (stored,) = struct.unpack_from(">I", data, end)
        if stored != zlib.crc32(data[:end]):
            where = f"layer {i}" if i < header.layers else "the detail stream"
            msg = f"corrupt .ddn file (checksum mismatch in {where})"
            raise CorruptError(msg)
        streams.append(bytes(data[pos:end]))
        pos = end + LAYER_CRC_BYTES
    detail = streams.pop() if with_detail else None
    return Container(header, tuple(streams), len(data), detail)
