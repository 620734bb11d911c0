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
    removing what killed writers of ``path`` left behind."""
    path = target_of(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            msg = f"{path}: not a regular file, device or pipe; refusing to replace it"
            raise OutputError(msg)
        if not overwrite:
            raise FileExistsError(errno.EEXIST, "already exists (use --force to overwrite)", str(path))
        tmp = Path(tempfile.mkstemp(prefix=".ddncodec-")[1])
        try:
            write(tmp)
            with path.open("wb") as sink:  # a device or pipe: stream into it
                sink.write(tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)
        return
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name appeared meanwhile: no silent loss
            except FileExistsError as exc:
                msg = f"{path}: already exists (use --force to overwrite)"
                raise FileExistsError(errno.EEXIST, msg) from exc
    finally:
        tmp.unlink(missing_ok=True)
