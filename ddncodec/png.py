"""PNG files deflated on every core: how the decoder writes its pixels.

Pillow deflates an image as one stream on one core, 0.75 s of a 12-megapixel decode whose
other stages run on all of them. A deflate stream can be cut at a flush point and the
pieces joined (what pigz does for gzip), so this writer filters and deflates horizontal
strips side by side and joins them into one zlib stream. Every row takes PNG's Up filter
(its bytewise difference from the row above), which numpy computes for a whole strip at
once; zlib's fastest level, as before. On a 12-megapixel photo: 0.22-0.25 s on two threads
(0.44 s on one), where Pillow took 0.75 s, for 5 % more bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVEL = 1  # zlib's fastest: the file is an output to look at, not to archive
STRIP_BYTES = 1 << 20  # raw bytes deflated as one piece: the first 32 KiB of each lose their history
_UP = 2  # PNG's filter type byte for "the row above"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (gray, RGB)
_ADLER_BASE = 65521
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, fastest level; (0x78 * 256 + 0x01) % 31 == 0


def encode(pixels: np.ndarray, threads: int = 1) -> bytes:
    """The PNG bytes of (H, W) gray or (H, W, 3) RGB uint8 ``pixels``, deflated on ``threads`` threads."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        msg = f"PNG pixels are (H, W) or (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}"
        raise ValueError(msg)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    step = max(1, STRIP_BYTES // max(1, rows.shape[1]))
    strips = [slice(top, min(top + step, height)) for top in range(0, height, step)]
    last = strips[-1]

    def deflated(strip: slice) -> tuple[bytes, int, int]:
        """A strip's deflate piece, the Adler-32 and the length of what it deflates."""
        filtered = np.empty((strip.stop - strip.start, rows.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = _UP
        above = rows[strip.start - 1 : strip.stop - 1] if strip.start else _shifted_down(rows[: strip.stop])
        np.subtract(rows[strip], above, out=filtered[:, 1:])  # modulo 256, as PNG filters are
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: no header
        piece = compressor.compress(filtered) + compressor.flush(zlib.Z_FINISH if strip is last else zlib.Z_SYNC_FLUSH)
        return piece, zlib.adler32(filtered), filtered.size

    if threads > 1 and len(strips) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="ddncodec-png") as pool:  # zlib lets go of the GIL
            pieces = list(pool.map(deflated, strips))
    else:
        pieces = [deflated(strip) for strip in strips]
    checksum = 1  # Adler-32 of nothing
    for _, adler, length in pieces:
        checksum = _adler_joined(checksum, adler, length)
    idat = [_ZLIB_HEADER, *(piece for piece, _, _ in pieces), struct.pack(">I", checksum)]
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join(
        [
            SIGNATURE,
            *_chunk(b"IHDR", header),
            *(c for data in idat for c in _chunk(b"IDAT", data)),
            *_chunk(b"IEND", b""),
        ]
    )


def _shifted_down(rows: np.ndarray) -> np.ndarray:
    """``rows`` one row down, a zero row on top: the rows above the image's first rows."""
    return np.concatenate([np.zeros_like(rows[:1]), rows[:-1]])


def _adler_joined(first: int, second: int, length: int) -> int:
    """The Adler-32 of two byte strings one after the other, from each one's Adler-32 and
    the second's ``length`` (zlib's adler32_combine, which Python's zlib does not offer)."""
    low = (first & 0xFFFF) + (second & 0xFFFF) - 1
    high = (first >> 16) + (second >> 16) + (length % _ADLER_BASE) * ((first & 0xFFFF) - 1)
    return (high % _ADLER_BASE) << 16 | low % _ADLER_BASE


def _chunk(kind: bytes, data: bytes) -> Iterator[bytes]:
    """A PNG chunk's pieces: length, type, data, CRC of type and data."""
    yield struct.pack(">I", len(data))
    yield kind
    yield data
    yield struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
