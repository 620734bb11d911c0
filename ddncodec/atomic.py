"""One way to write a file: to a temporary name beside it, then rename. A crash or an
error at any moment leaves either the previous file or the complete new one, never a
half-written file; the temporary file is removed on failure.

A writer that is killed outright (SIGKILL, power cut) cannot remove its temporary file,
``.NAME.tmp<PID>``; the next write of the same file removes those whose process is gone."""

from __future__ import annotations

import contextlib
import os
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


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp_path)`` then rename it over ``path``, after removing what killed
    writers of ``path`` left behind."""
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
