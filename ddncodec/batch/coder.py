"""What coding one file of a batch means: the settings every file is coded with, the file
(``Item``), what a worker hands back (``Coded``, or a ``Failure``), and the ``Coder`` that
the command line, the local pool and every Ray actor code through, so that they agree to
the byte and print the same lines."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddncodec import reading
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import DDNError, InputError

if TYPE_CHECKING:
    import numpy as np

    from ddncodec.codec import Progress
    from ddncodec.modelfile import CodecModel


@dataclass(frozen=True)
class Settings:
    """How every file of a batch is coded (it travels to the workers)."""

    command: str  # "encode" or "decode"
    quality: int | None = None
    bpp: float | None = None
    layers: int | None = None
    effort: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # per file (None: every core of the worker's machine); never changes a byte

    @property
    def suffix(self) -> str:
        """The suffix of the files a command writes into a folder."""
        return ".ddn" if self.command == "encode" else ".png"

    def options(self, fingerprint: bytes) -> dict[str, Any]:
        """What decides an output's bytes, recorded with it so that a rerun with other
        options (or another model) never takes an old output for a finished one."""
        coding = {"quality": self.quality, "bpp": self.bpp, "effort": self.effort} if self.command == "encode" else {}
        return {"command": self.command, **coding, "layers": self.layers, "model": fingerprint.hex()}


@dataclass(frozen=True)
class Item:
    """One file to code: a path (or its bytes, read by the driver for a remote worker),
    its name in messages, its output's name in the summary line, the format decode writes."""

    source: Path | bytes
    name: str
    target: str
    fmt: str = "PNG"


@dataclass
class Coded:
    """One coded file, as a worker hands it back."""

    data: bytes
    lines: list[str]  # the summary lines a command prints for it
    bpp: float  # of the .ddn file
    psnr: float | None  # of the encoder's reconstruction; None for decode
    seconds: float = 0.0  # spent coding, on the worker


Failure = tuple[int, str]  # the exit code and the one-line message of a file that failed
Outcome = Coded | Failure


class Coder:
    """What coding one file means for a command, with a model loaded once per worker. The
    CLI, the local pool and every Ray actor code through it, so they agree to the byte
    and print the same lines."""

    def __init__(self, settings: Settings, model: CodecModel) -> None:
        self.settings = settings
        self.model = model

    def __call__(self, item: Item, progress: Progress | None = None) -> Coded:
        """Code one file, reporting its tiles to ``progress``."""
        start = time.perf_counter()
        code = self._encode if self.settings.command == "encode" else self._decode
        coded = code(item, progress)
        coded.seconds = time.perf_counter() - start
        return coded

    def _encode(self, item: Item, progress: Progress | None) -> Coded:
        from ddncodec import codec

        s = self.settings
        result = codec.encode(
            reading.input_bytes(item.source, s.max_pixels),
            self.model,
            s.quality,
            bpp=s.bpp,
            layers=s.layers,
            effort=s.effort,
            max_pixels=s.max_pixels,
            threads=s.threads,
            progress=progress,
        )
        lines = [
            f"{item.name} {result.width}x{result.height} -> {item.target}: {len(result.data):,} B, "
            f"{result.bpp:.4f} bpp, {result.psnr:.2f} dB ({result.rung.layers} layers, λ {result.rung.lam:g}"
            f"{f', detail step {result.rung.detail}' if result.rung.detail else ''})"
        ]
        if result.frames > 1:
            lines.append(f"{item.name}: coded frame 1 of {result.frames} (a .ddn file holds one still image)")
        if s.bpp is not None and not codec.reached(result, s.bpp):
            lines.append(
                f"{item.name}: --bpp {s.bpp:g} is out of reach for this image; the closest is {result.bpp:.4f} bpp"
            )
        return Coded(result.data, lines, result.bpp, result.psnr)

    def _decode(self, item: Item, progress: Progress | None) -> Coded:
        from ddncodec import codec, container, imageio

        s = self.settings
        data = reading.input_bytes(item.source, s.max_pixels)
        header, _ = container.parse_header(data, s.max_pixels)
        imageio.check_fits(header.width, header.height, item.fmt)
        pixels, mode = codec.decode_pixels(
            data, self.model, s.layers, max_pixels=s.max_pixels, threads=s.threads, progress=progress
        )
        try:
            written = _written(pixels, mode, item.fmt, s.threads)
        except Exception as exc:  # a writer's own limits or bugs: one line, and the batch goes on
            msg = f"cannot write {item.fmt} ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        lines = [f"{item.name} -> {item.target}: {header.width}x{header.height} {mode}"]
        return Coded(written, lines, 8 * len(data) / (header.width * header.height), None)


def _written(pixels: np.ndarray, mode: str, fmt: str, threads: int | None) -> bytes:
    """Decoded (H, W, 3) pixels as an image of ``mode`` in format ``fmt``: PNG straight from
    the array, deflated on ``threads`` threads (None: every core; ``png``), any other
    format through Pillow."""
    from ddncodec import imageio

    if fmt == "PNG":
        from ddncodec import png

        return png.encode(imageio.in_mode(pixels, mode), (os.cpu_count() or 1) if threads is None else threads)
    buffer = io.BytesIO()
    imageio.from_pixels(pixels, mode).save(buffer, format=fmt)
    return buffer.getvalue()


def failure(exc: BaseException) -> Failure:
    """The command line's one rule for an error a file caused: its exit code and line."""
    from ddncodec.cli import exit_code, message  # not at the top: the command line imports this package

    return exit_code(exc), message(exc)


def attempt(coder: Coder, item: Item, progress: Progress | None = None) -> Outcome:
    """The coded file, or the failure it caused."""
    try:
        return coder(item, progress)
    except (DDNError, OSError) as exc:
        return failure(exc)
