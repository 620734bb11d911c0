"""The resumable record of a batch written to a folder, ``OUTDIR/ddncodec-manifest.jsonl``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path, PurePath
from typing import IO, Any

from ddncodec.batch.coder import Coded
from ddncodec.errors import OptionError

MANIFEST = "ddncodec-manifest.jsonl"


class Manifest:
    """``OUTDIR/ddncodec-manifest.jsonl``: one JSON line per input coded or failed,
    appended and flushed as results arrive. An output counts as finished when it exists
    with the size its last record gives and was made with the same options; the record
    is written before the output's atomic rename, so a kill at any instant leaves either
    a finished output or one the next run redoes, never a finished one it redoes."""

    def __init__(self, folder: Path, options: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.options = options
        self._file: IO[str] | None = None

    def finished(self) -> dict[str, int]:
        """Output (relative to the folder) -> its size, for outputs recorded as done with
        these options; the last record of an output wins; a line a kill cut off is skipped."""
        sizes: dict[str, int] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return sizes
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                record = json.loads(line)
                sizes.pop(record["output"], None)
                if record["status"] == "ok" and record["options"] == self.options:
                    sizes[record["output"]] = int(record["bytes"])
        return sizes

    def open(self) -> None:
        """Open for appending, alone: a second batch writing the same folder is refused."""
        self.folder.mkdir(exist_ok=True)
        self._file = self.path.open("a+")
        if os.name == "posix":
            import fcntl

            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.close()
                msg = f"{self.folder}: another batch is writing to this folder"
                raise OptionError(msg) from None
        self._file.seek(0, os.SEEK_END)
        if self._file.tell():  # a line a kill cut off gets its end, so the next one stands alone
            self._file.seek(self._file.tell() - 1)
            if self._file.read(1) != "\n":
                self._file.write("\n")

    def add(self, source: Path, output: PurePath, coded: Coded | None, error: str | None = None) -> None:
        assert self._file is not None
        record = {
            "input": str(source),
            "output": output.as_posix(),
            "bytes": None if coded is None else len(coded.data),
            "bpp": None if coded is None else round(coded.bpp, 6),
            "psnr": None if coded is None or coded.psnr is None else round(coded.psnr, 4),
            "seconds": None if coded is None else round(coded.seconds, 4),
            "status": "failed" if coded is None else "ok",
            "error": error,
            "options": self.options,
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
