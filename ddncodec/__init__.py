"""ddncodec: a learned image codec built on Discrete Distribution Networks.

    data = ddncodec.encode("photo.png", quality=4)   # -> bytes of a .ddn file
    image = ddncodec.decode(data)                     # -> PIL.Image.Image (or a .ddn path)
    codec = ddncodec.Codec()                          # keeps the model loaded: codec.encode / codec.decode

Importing is cheap (torch loads on first use) and registers the .ddn Pillow plugin.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import TYPE_CHECKING

from ddncodec import pillow_plugin as _pillow_plugin  # noqa: F401 (registers .ddn with Pillow)
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import DDNError, FormatError, InputError, ModelError, OptionError

if TYPE_CHECKING:
    from PIL import Image

    from ddncodec.api import Codec
    from ddncodec.imageio import ImageSource
    from ddncodec.modelfile import CodecModel

try:
    __version__ = metadata.version("ddncodec")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Codec",
    "DDNError",
    "FormatError",
    "InputError",
    "ModelError",
    "OptionError",
    "__version__",
    "decode",
    "encode",
    "load_model",
]


def __getattr__(name: str) -> object:
    """``Codec`` is imported on first use: ``import ddncodec`` stays cheap."""
    if name == "Codec":
        from ddncodec.api import Codec

        return Codec
    msg = f"module 'ddncodec' has no attribute {name!r}"
    raise AttributeError(msg)


def encode(
    image: ImageSource,
    quality: int | None = None,
    *,
    bpp: float | None = None,
    layers: int | None = None,
    effort: int = 1,
    model: str | os.PathLike | CodecModel = "default",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
) -> bytes:
    """The .ddn bytes of an image (a Pillow image, a uint8 array, a path or a file's bytes).
    ``quality`` 1..8 (higher: more bits, more PSNR), or a target ``bpp`` for the whole
    file, or ``layers`` to code with the plain nearest choice; none of them: the default
    quality. ``effort`` 2 takes about 2.3x the encode time; each rung then spends about
    10 % more bits for a higher PSNR (1.5 % fewer bits at equal PSNR, Kodak). An image of
    more than ``max_pixels`` pixels raises ``InputError``. ``threads``: None for every core."""
    from ddncodec.api import Codec

    codec = Codec(model, threads=threads, max_pixels=max_pixels)
    return codec.encode(image, quality, bpp=bpp, layers=layers, effort=effort)


def decode(
    data: bytes | bytearray | memoryview | str | os.PathLike,
    *,
    layers: int | None = None,
    model: str | os.PathLike | CodecModel | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
) -> Image.Image:
    """The image in a .ddn file's bytes or at its path (RGB, or L for gray input); only its
    first ``layers`` layers if given. A file made with another model, or whose header
    claims more than ``max_pixels`` pixels, raises ``FormatError``."""
    from ddncodec.api import Codec

    return Codec("default" if model is None else model, threads=threads, max_pixels=max_pixels).decode(
        data, layers=layers
    )


def load_model(name_or_path: str | os.PathLike = "default") -> CodecModel:
    """A model by name (looked up in $DDNCODEC_MODELS, then models/) or path; cached per file."""
    from ddncodec import codec

    return codec.load_model(name_or_path)
