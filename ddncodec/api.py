"""``Codec``: the Python API that keeps a model loaded, for batch users and the Pillow plugin.

    codec = ddncodec.Codec()                    # the shipped default model, every core
    data = codec.encode(array_or_image, quality=4)
    image = codec.decode(data)                  # or codec.decode("photo.ddn")

Importing this module is cheap: torch loads with the model, on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddncodec import reading
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

    from ddncodec.modelfile import CodecModel


def from_array(array: np.ndarray) -> Image.Image:
    """A uint8 array (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA as a Pillow image."""
    from PIL import Image

    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    channels = 2 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    mode = modes.get(channels)
    if array.dtype != np.uint8 or mode is None or min(array.shape[:2], default=0) < 1:
        msg = f"an image array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4); got {array.dtype} {array.shape}"
        raise InputError(msg)
    return Image.fromarray(np.ascontiguousarray(array), mode)


class Codec:
    """A loaded model and a thread count; ``encode`` and ``decode`` as the CLI does them.
    The bytes and pixels are the same for any thread count."""

    def __init__(
        self,
        model: str | os.PathLike | CodecModel = "default",
        *,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        from ddncodec import codec

        self.model = codec.load_model(model)
        self.threads = threads  # None: every core
        self.max_pixels = max_pixels

    def encode(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike | bytes,
        quality: int | None = None,
        *,
        bpp: float | None = None,
        layers: int | None = None,
        effort: int = 1,
    ) -> bytes:
        """The .ddn bytes of an image: a Pillow image, a uint8 array, a path or a file's bytes."""
        from ddncodec import codec

        source = from_array(image) if isinstance(image, np.ndarray) else image
        encoded = codec.encode(
            source,
            self.model,
            quality,
            bpp=bpp,
            layers=layers,
            effort=effort,
            max_pixels=self.max_pixels,
            threads=self.threads,
        )
        return encoded.data

    def decode(self, data: bytes | str | os.PathLike, *, layers: int | None = None) -> Image.Image:
        """The image in a .ddn file's bytes or at its path (only its first ``layers`` layers if given)."""
        from ddncodec import codec

        source = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else Path(data)
        return codec.decode(
            reading.input_bytes(source, self.max_pixels),
            self.model,
            layers,
            max_pixels=self.max_pixels,
            threads=self.threads,
        )
