"""Pillow plugin for .ddn, registered by ``import ddncodec``: ``Image.open("x.ddn")``
decodes, ``img.save("x.ddn", quality=4)`` encodes (also ``bpp=``, ``layers=``,
``effort=``, ``model=``).

Errors follow Pillow's conventions: a file that is not a valid .ddn header raises
``SyntaxError`` in ``_open`` (Pillow then reports "cannot identify image file"), a
stream that fails to decode raises ``OSError`` in ``load``; the ddncodec error is the
``__cause__``.

``Image.open`` cannot pass options, so files open with the model named by the
module global ``MODEL`` (default "default"); set ``ddncodec.pillow_plugin.MODEL``
to a name, path or ``CodecModel`` to use another. ``_open`` reads and validates the
header only; the network runs in ``load``.
"""

from __future__ import annotations

import os
from io import BytesIO
from typing import IO, TYPE_CHECKING

from PIL import Image, ImageFile

from ddncodec import container
from ddncodec.errors import DDNError

if TYPE_CHECKING:
    from ddncodec.modelfile import CodecModel

FORMAT = "DDN"
MODEL: CodecModel | str | os.PathLike = "default"
_HEADER_READ = 4096  # bytes: more than the largest header (255 layers)


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(container.MAGIC)


class DdnImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "ddncodec learned image (Discrete Distribution Network)"

    def _open(self) -> None:
        assert self.fp is not None  # Pillow's own contract for _open
        try:
            header, _ = container.parse_header(self.fp.read(_HEADER_READ))
        except DDNError as exc:
            raise SyntaxError(str(exc)) from exc
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info["ddn_layers"] = header.layers
        self.tile = [ImageFile._Tile("raw", (0, 0, *self._size), 0, header.mode)]

    def load(self) -> Image.core.PixelAccess | None:
        if self.tile:
            from ddncodec import codec

            assert self.fp is not None
            self.fp.seek(0)
            try:
                image = codec.decode(self.fp.read(), MODEL)
            except DDNError as exc:
                raise OSError(str(exc)) from exc
            if self._exclusive_fp:
                self.fp.close()
            self.fp = BytesIO(image.tobytes())
        return super().load()


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from ddncodec import codec

    info = im.encoderinfo
    encoded = codec.encode(
        im,
        info.get("model", MODEL),
        info.get("quality"),
        bpp=info.get("bpp"),
        layers=info.get("layers"),
        effort=info.get("effort", 1),
    )
    fp.write(encoded.data)


Image.register_open(FORMAT, DdnImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".ddn")
Image.register_mime(FORMAT, "image/x-ddn")
