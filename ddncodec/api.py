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

from ddncodec import imageio, reading
from ddncodec.container import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from PIL import Image

    from ddncodec.modelfile import CodecModel


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
        image: imageio.ImageSource,
        quality: int | None = None,
        *,
        bpp: float | None = None,
        layers: int | None = None,
        effort: int = 1,
    ) -> bytes:
        """The .ddn bytes of an image: a Pillow image, a uint8 array, a path or a file's bytes."""
        from ddncodec import codec

        encoded = codec.encode(
            image,
            self.model,
            quality,
            bpp=bpp,
            layers=layers,
            effort=effort,
            max_pixels=self.max_pixels,
            threads=self.threads,
        )
        return encoded.data

    def decode(
        self, data: bytes | bytearray | memoryview | str | os.PathLike, *, layers: int | None = None
    ) -> Image.Image:
        """The image in a .ddn file's bytes or at its path (only its first ``layers`` layers if given)."""
        from ddncodec import codec

        if isinstance(data, bytes | bytearray | memoryview):
            source: bytes | Path = bytes(data)
        elif isinstance(data, str | os.PathLike):
            source = Path(os.fsdecode(data))
        else:
            msg = f"a .ddn file must be given as its bytes or its path, not {imageio.describe(data)}"
            raise TypeError(msg)
        return codec.decode(
            reading.input_bytes(source, self.max_pixels),
            self.model,
            layers,
            max_pixels=self.max_pixels,
            threads=self.threads,
        )
