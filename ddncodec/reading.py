"""Reading inputs that may be hostile. Only regular files are read by name: a FIFO
blocks until some writer comes, a device such as /dev/zero never ends, a socket cannot
be opened. And no input is read past the largest size a legal one can have (``limit``),
so an endless stdin is refused instead of filling memory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ddncodec.errors import InputError

BYTES_PER_PIXEL = 16
"""The most bytes an input may spend per pixel: a 16-bit RGBA TIFF spends 8, a .ddn file
of noise at detail step 1 about 5.7 (45 bpp, the default model)."""
HEADROOM = 16 << 20  # bytes on top: headers, metadata (ICC, EXIF), a tiny image's per-layer overhead
_CHUNK = 1 << 20  # read in pieces: one read of ``limit`` bytes would reserve them all up front
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}
_STDIO = "use - for stdin or stdout"


def limit(max_pixels: int) -> int:
    """The largest input, in bytes, of an image of at most ``max_pixels`` pixels."""
    return BYTES_PER_PIXEL * max_pixels + HEADROOM


def special(mode: int) -> str | None:
    """What a file of ``mode`` (``os.stat``, after symlinks) is if not a regular file
    ("a FIFO", "a device", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else _KINDS.get(stat.S_IFMT(mode), "a special file")


def _refuse_special(mode: int, path: Path) -> None:
    kind = special(mode)
    if kind is not None:
        msg = f"not a regular file but {kind} ({_STDIO})"
        raise OSError(errno.EINVAL, msg, str(path))


def require_regular(path: Path) -> None:
    """Raise an OSError (exit 1 at the command line) unless ``path`` is a regular file,
    after symlinks; a missing file or a symlink loop raises its own OSError."""
    _refuse_special(os.stat(path).st_mode, path)


def read_regular(path: Path, most: int) -> bytes:
    """A regular file's bytes, at most ``most`` of them (else an InputError). It is opened
    without blocking and checked once open, so a FIFO swapped in after any earlier check
    cannot hang the read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        _refuse_special(info.st_mode, path)
        if info.st_size > most:  # refused without reading (/proc files claim 0: read_at_most bounds them)
            raise _too_large(str(path), most)
        return read_at_most(file, most, str(path))


def input_bytes(source: Path | bytes, max_pixels: int) -> bytes:
    """An input's bytes: as given, or a regular file's, no more than an input of at most
    ``max_pixels`` pixels takes (``limit``)."""
    return source if isinstance(source, bytes) else read_regular(source, limit(max_pixels))


def read_at_most(stream: BinaryIO, most: int, name: str) -> bytes:
    """All of ``stream`` (called ``name`` in errors); an InputError (exit 2) as soon as it
    passes ``most`` bytes, of which at most ``most`` + 1 are read."""
    chunks: list[bytes] = []
    size = 0
    while size <= most:
        chunk = stream.read(min(_CHUNK, most + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise _too_large(name, most)


def _too_large(name: str, most: int) -> InputError:
    msg = f"{name}: over {most:,} bytes, more than any input within the pixel limit takes (--max-pixels)"
    return InputError(msg)
