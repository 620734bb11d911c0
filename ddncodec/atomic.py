"""One way to write a file: to a temporary name beside it, then rename. A crash or an
error at any moment leaves either the previous file or the complete new one, never a
half-written file; the temporary file is removed on failure.

What is already at the path is respected: a symlink is written through (its target is
replaced, the link stays); a character device or FIFO (``/dev/null``, a pipe) is written
into, never replaced; a socket, a folder or anything else that is not a regular file is
refused. Without ``overwrite`` the final name is created exclusively (a hard link of the
finished temporary file), so of two racing writers one fails instead of both "winning".

A writer that is killed outright (SIGKILL, power cut) cannot remove its temporary file,
``.NAME.tmp<PID>``; the next write of the same file removes those whose process is gone."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists; when in doubt, yes."""
    try:
        os.kill(pid, 0)  # signal 0: only the existence and permission checks
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it exists, someone else's
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files that killed writers of ``path`` left beside it: those
    named ``.NAME.tmp<PID>`` whose process no longer exists. Best effort: a file that
    cannot be read or removed is left as it is. POSIX only (on Windows, os.kill would
    terminate the process it asks about)."""
    if os.name != "posix":
        return
    prefix = f".{path.name}.tmp"
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            suffix = entry.name[len(prefix) :]
            if not entry.name.startswith(prefix) or not (suffix.isascii() and suffix.isdigit()):
                continue
            pid = int(suffix)
            if pid > 0 and pid != os.getpid() and not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_EXISTS = "already exists (use --force to overwrite)"


class OutputError(OSError):
    """An output path that cannot be written as asked (exit code 1 at the CLI)."""


def target_of(path: Path) -> Path:
    """The file a write to ``path`` lands in: a symlink's final target, else ``path``."""
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        msg = f"{path}: cannot resolve the symlink ({exc})"
        raise OutputError(msg) from exc


def write_atomically(path: Path, write: Callable[[Path], object], overwrite: bool = True) -> None:
    """``write(tmp_path)`` then publish it at ``path`` (see the module docstring), after
    removing what killed writers of ``path`` left behind. An OSError names ``path``, the
    file the caller asked for, never the temporary file (``_about``)."""
    asked, path = path, target_of(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            msg = f"{path}: not a regular file, device or pipe; refusing to replace it"
            raise OutputError(msg)
        if not overwrite:
            raise FileExistsError(errno.EEXIST, _EXISTS, str(path))
        tmp = Path(tempfile.mkstemp(prefix=".ddncodec-")[1])
        publish = _stream_into
    else:
        remove_stale_temps(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        publish = os.replace if overwrite else _link
    try:
        write(tmp)
        publish(tmp, path)
    except OSError as exc:
        raise _about(exc, tmp, asked) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stream_into(tmp: Path, path: Path) -> None:
    """A device or pipe at ``path``: the written bytes streamed into it."""
    with path.open("wb") as sink:
        sink.write(tmp.read_bytes())


def _link(tmp: Path, path: Path) -> None:
    """``tmp`` published at ``path`` only if nothing is there yet: of two racing writers
    without ``overwrite``, the second fails instead of silently replacing the first."""
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, _EXISTS, str(path)) from exc


def _about(exc: OSError, tmp: Path, path: Path) -> OSError:
    """``exc`` naming ``path`` where it named the temporary file ``tmp`` (a read-only
    folder: ``.x.png.tmp123: Read-only file system``) or no file at all (a full disk fails
    a write(), which knows no name). An error about some other file stays as it is."""
    if exc.filename not in (None, str(tmp)):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))
