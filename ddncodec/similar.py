"""Near-duplicate search straight from .ddn files.

A file's signature is a small thumbnail of the coarse image its first SIGNATURE_LAYERS
layers decode to (no post-filter, no finer layer, no detail layer), so only a prefix of
the file is read: its header and those layers' streams. The thumbnail is squeezed to
SIDE x SIDE whatever the image's size and shape, and its brightness and contrast are
normalised away; a query is matched in all eight orientations. So a copy at another size,
re-compressed, re-exposed, slightly cropped or rotated, mirrored or turned by quarter turns
lands near the original; a crop that keeps much less of the photo often does not
(benchmarks/results/similar.md).

An index keeps the signatures of a library's files by path, size and modification
time: re-indexing reads only new or changed files, and a search reads only those too.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ddncodec import container, imageio, reading
from ddncodec.atomic import write_atomically
from ddncodec.errors import DDNError, FormatError, ModelError

if TYPE_CHECKING:
    from ddncodec.codec import ModelSpec

SIGNATURE_LAYERS = 3
"""The default model's 32 px layers. One or two found as many near-duplicates, with less
margin to the next photo; more cost bytes and time and found no more."""
SIDE = 16  # px a side of the thumbnail
HEAD_BYTES = 128  # the first read of a file: the header of a file of up to ~50 layers
MAX_HEADER_BYTES = 2048  # the longest header (255 layers of 5-byte lengths) is 1,304 bytes
INDEX_VERSION = 1  # of the index file and of the signature it holds; another is rebuilt


def read_prefix(path: Path, layers: int = SIGNATURE_LAYERS) -> bytes:
    """The bytes of a .ddn file up to the end of its first ``layers`` layers (all of them
    if it has fewer): the header first, then only as far as those layers need."""
    reading.require_regular(path)  # a FIFO would block the open
    with path.open("rb") as file:
        data = file.read(HEAD_BYTES)
        try:
            header, start = container.parse_header(data)
        except container.CorruptError:  # a header longer than the first read, or a broken one
            data += file.read(MAX_HEADER_BYTES - len(data))
            header, start = container.parse_header(data)
        end = start + sum(n + container.LAYER_CRC_BYTES for n in header.lengths[:layers])
        data += file.read(max(0, end - len(data)))
        return data[:end]


def coarse(prefix: bytes, model: ModelSpec) -> np.ndarray:
    """(H, W, 3) uint8: the image the layers of a .ddn prefix decode to, without the
    post-filter (it sharpens cell borders a thumbnail averages away, and costs 10x the walk).
    Torch and the model load here, on the first walk: a search of an index with an image
    query needs neither."""
    from ddncodec import codec

    parsed = container.unpack(prefix)
    header = parsed.header
    maker = codec.model_for(header, model)  # as the decoder picks it: a former default's files too
    imageio.check_padded(header.width, header.height, maker.config.unit, container.DEFAULT_MAX_PIXELS)
    count = min(len(parsed.streams), len(maker.config.layers))
    with codec.workers(1):
        return codec.decode_maps(codec.read_maps(parsed, maker, count), maker)


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The signature of (H, W, 3) uint8 pixels: their SIDE x SIDE area average, less its
    mean, at unit length (a dot product of two is their correlation)."""
    small = np.asarray(Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32)
    centred = (small - small.mean()).ravel()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm else centred


def of_ddn(path: Path, model: ModelSpec) -> tuple[np.ndarray, int]:
    """A .ddn file's signature and the bytes read for it."""
    prefix = read_prefix(path)
    return thumbnail(coarse(prefix, model)), len(prefix)


def of_image(source: imageio.ImageSource) -> np.ndarray:
    """An image's signature: its own thumbnail, at no network cost. A coarse decode's
    thumbnail is the image's, blurred: image queries found their originals as often as
    .ddn queries did (benchmarks/results/similar.md)."""
    pixels, _ = imageio.to_pixels(imageio.open_image(source, container.DEFAULT_MAX_PIXELS))
    return thumbnail(pixels)


def of_query(path: Path, model: ModelSpec, known: dict[str, Record]) -> np.ndarray:
    """The signature of a query, a .ddn file (by its magic bytes) or an image; its record
    in ``known`` if it has a current one there (an indexed file is not read again)."""
    reading.require_regular(path)
    record = recorded(path, known)
    if record is not None:
        return record.signature.astype(np.float32)
    with path.open("rb") as file:
        is_ddn = file.read(len(container.MAGIC)) == container.MAGIC
    return of_ddn(path, model)[0] if is_ddn else of_image(path)


# ---------------------------------------------------------------- libraries and their index


@dataclass(frozen=True)
class Record:
    """One library file's signature, and the size and modification time (ns) it was read at."""

    path: str  # absolute
    size: int
    mtime: int
    signature: np.ndarray


@dataclass
class Library:
    """The signatures of a library's files (``names`` as the caller named them), and
    how many files were read for them and how many bytes that took."""

    names: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    read: int = 0
    bytes_read: int = 0

    @property
    def signatures(self) -> np.ndarray:
        return np.stack([r.signature for r in self.records]).astype(np.float32) if self.records else np.empty((0, 0))


Warn = Callable[[str], None]


def recorded(path: Path, known: dict[str, Record]) -> Record | None:
    """The record of ``path`` in ``known`` (by absolute path) if the file still has the
    size and modification time recorded."""
    stat = path.stat()
    record = known.get(os.path.abspath(path))
    return record if record is not None and (record.size, record.mtime) == (stat.st_size, stat.st_mtime_ns) else None


def survey(paths: Iterable[Path], model: ModelSpec, known: dict[str, Record], warn: Warn) -> Library:
    """The signatures of the .ddn files ``paths``: their current records in ``known``,
    else read from the files. A file that cannot be read, or is not a .ddn file of
    ``model`` or a former default model, is passed to ``warn`` as one line and left out;
    a model that cannot be loaded fails the survey."""
    library = Library()
    for path in paths:
        try:
            record = recorded(path, known)
            if record is None:
                stat = path.stat()
                signature, count = of_ddn(path, model)
                record = Record(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, signature.astype(np.float16))
                library.read += 1
                library.bytes_read += count
        except ModelError:
            raise
        except (DDNError, OSError) as exc:
            warn(f"{path}: {describe(exc)}")
            continue
        library.names.append(str(path))
        library.records.append(record)
    return library


def describe(exc: BaseException) -> str:
    """One line for an error: an OSError's reason without its "[Errno N]"."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


@dataclass(frozen=True)
class Hit:
    path: str
    score: float  # the correlation of the two thumbnails, the query's turned the best way: 1 the same


def orientations(signature: np.ndarray) -> np.ndarray:
    """(8, D): a signature turned by each quarter turn, each also mirrored. The thumbnail
    squeezes any shape to a square, so a turned photo's thumbnail is the turned thumbnail."""
    square = signature.reshape(SIDE, SIDE, 3)
    turned = [np.rot90(square, k) for k in range(4)]
    return np.stack([t.ravel() for t in (*turned, *(t[:, ::-1] for t in turned))])


def scores(query: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """How much each of (N, D) ``signatures`` is like the signature ``query`` in the best of
    its ``orientations``: a flipped or quarter-turned copy is a near-duplicate too (all
    eight left the brief's variants at the same recall, and found those;
    benchmarks/results/similar.md)."""
    return (signatures @ orientations(query.astype(np.float32)).T).max(1)


def rank(query: np.ndarray, library: Library, count: int) -> list[Hit]:
    """The ``count`` files of ``library`` most like the signature ``query``, best first."""
    if not library.records:
        return []
    found = scores(query, library.signatures)
    best = np.argsort(-found, kind="stable")[:count]
    return [Hit(library.names[i], round(float(found[i]), 4)) for i in best]


_MAGIC = b"DDNI"
_HEAD = struct.Struct(">4sBBHI")  # magic, INDEX_VERSION, SIGNATURE_LAYERS, SIDE, records
_FIXED = np.dtype([("size", ">u8"), ("mtime", ">i8"), ("path", ">u2")])  # per record; "path": its bytes
_CRC = 4
MAX_INDEX_BYTES = 1 << 32  # an index of about 2.5 million files
"""An index file: the head, the records' fixed fields, their paths (file-system bytes), the
signatures (float16), and a CRC-32 of all of it. No model is named: a signature is a
thumbnail of pixels, each file's read with the model that made it."""


class StaleIndexError(FormatError):
    """An index of another kind of signature (another ddncodec version): it must be rebuilt."""


def _dimension() -> int:
    return 3 * SIDE * SIDE


_IDENTITY = (INDEX_VERSION, SIGNATURE_LAYERS, SIDE)


def load_index(path: Path) -> dict[str, Record]:
    """An index's records by absolute path; a FormatError (StaleIndexError for an index of
    another version) unless it is a sound index of this version's signatures."""
    data = reading.read_regular(path, MAX_INDEX_BYTES)
    if len(data) < _HEAD.size + _CRC or not data.startswith(_MAGIC):
        msg = f"{path}: not a ddncodec index"
        raise FormatError(msg)
    corrupt = f"{path}: corrupt index"
    if zlib.crc32(data[:-_CRC]) != int.from_bytes(data[-_CRC:], "big"):
        msg = f"{corrupt} (checksum mismatch)"
        raise FormatError(msg)
    _, *identity, count = _HEAD.unpack_from(data)
    if tuple(identity) != _IDENTITY:
        msg = f"{path}: an index of another ddncodec version (rebuild it with ddncodec index)"
        raise StaleIndexError(msg)
    start = _HEAD.size + count * _FIXED.itemsize
    if start > len(data):
        raise FormatError(corrupt)
    fixed = np.frombuffer(data, _FIXED, count, _HEAD.size)
    ends = start + np.cumsum(fixed["path"], dtype=np.int64)
    names_end = int(ends[-1]) if count else start
    if names_end + count * _dimension() * 2 + _CRC != len(data):
        raise FormatError(corrupt)
    signatures = np.frombuffer(data, ">f2", count * _dimension(), names_end).reshape(count, -1).astype(np.float16)
    records = {}
    for i, (size, mtime, length) in enumerate(fixed.tolist()):
        name = os.fsdecode(data[int(ends[i]) - length : int(ends[i])])
        records[name] = Record(name, size, mtime, signatures[i])
    return records


def save_index(path: Path, records: list[Record]) -> None:
    """Write ``records`` as an index, atomically."""
    names = [os.fsencode(r.path) for r in records]
    fixed = np.array([(r.size, r.mtime, len(n)) for r, n in zip(records, names, strict=True)], dtype=_FIXED)
    signatures = np.stack([r.signature for r in records]) if records else np.empty((0, _dimension()))
    body = b"".join(
        (
            _HEAD.pack(_MAGIC, *_IDENTITY, len(records)),
            fixed.tobytes(),
            *names,
            signatures.astype(">f2").tobytes(),
        )
    )
    blob = body + zlib.crc32(body).to_bytes(_CRC, "big")
    write_atomically(path, lambda tmp: tmp.write_bytes(blob))
