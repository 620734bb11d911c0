"""One way to write a file: to a temporary name beside it, then rename. A crash or an
error at any moment leaves either the previous file or the complete new one, never a
half-written file; the temporary file is removed on failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp_path)`` then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
