"""The codecs a bench run compares, behind one interface::

    encode(image: PIL RGB image, quality) -> bytes     (the whole file)
    decode(bytes) -> PIL image                          (fully loaded)

A ``CodecPlan`` says which codec and qualities one worker process runs; it is plain
JSON so it can cross the process boundary. Quality sweeps follow CompressAI's
(5..95 for JPEG/WebP) and add a few low qualities, where ddncodec's rates are.
"""

from __future__ import annotations

import importlib.metadata
import io
from dataclasses import dataclass
from typing import Protocol

import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
from PIL import Image, features

DDN_QUALITIES = (1, 2, 3, 4, 5, 6, 7, 8)
DDN_QUICK = (1, 4, 8)
QUICK = (10, 50, 90)
EVERY_5 = tuple(range(5, 100, 5))


class Codec(Protocol):
    name: str

    def encode(self, image: Image.Image, quality: int | None) -> bytes: ...

    def decode(self, data: bytes) -> Image.Image: ...

    def info(self) -> dict: ...


@dataclass(frozen=True)
class PillowFormat:
    """A Pillow format at fixed settings, swept over ``quality``."""

    name: str
    format: str
    options: dict
    sweep: tuple[int, ...]
    library: str  # Pillow feature (or, failing that, package) whose version goes into the report

    def encode(self, image: Image.Image, quality: int | None) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, self.format, quality=quality, **self.options)
        return buffer.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    def info(self) -> dict:
        version = features.version(self.library) or importlib.metadata.version(self.library)
        return {"settings": self.options, "library": f"{self.library} {version}"}


PILLOW_FORMATS = {
    "jpeg": PillowFormat(
        "JPEG",
        "JPEG",
        {"subsampling": "4:2:0", "optimize": True},
        (1, 3, *EVERY_5),
        "libjpeg_turbo",
    ),
    "webp": PillowFormat("WebP", "WEBP", {"method": 4}, (0, 2, *EVERY_5), "webp"),
    "avif": PillowFormat("AVIF", "AVIF", {"speed": 6, "subsampling": "4:2:0"}, (0, 5, *range(10, 100, 10)), "avif"),
    "jxl": PillowFormat("JPEG XL", "JXL", {"effort": 7}, (0, 5, *range(10, 100, 10)), "pillow-jxl-plugin"),
}


class DDNCodec:
    """ddncodec through its public API only, with the model loaded once, on as many
    threads as the worker gives torch (the bench's --threads)."""

    name = "ddncodec"

    def __init__(self, model: str, effort: int = 1) -> None:
        import torch

        import ddncodec

        self.codec = ddncodec.Codec(model, threads=torch.get_num_threads())
        self.model = self.codec.model
        self.effort = effort

    def encode(self, image: Image.Image, quality: int | None) -> bytes:
        return self.codec.encode(image, quality, effort=self.effort)

    def decode(self, data: bytes) -> Image.Image:
        return self.codec.decode(data)

    def info(self) -> dict:
        return {
            "fingerprint": self.model.fingerprint.hex()[:16],
            "layers": len(self.model.config.layers),
            "unit": self.model.config.unit,
            "effort": self.effort,
            "card": self.model.card,
        }


@dataclass(frozen=True)
class CodecPlan:
    """One worker's job: a codec key, its argument and the qualities to sweep."""

    key: str  # "ddncodec", a PILLOW_FORMATS key, or "standin"
    qualities: tuple[int | None, ...]
    argument: str = ""  # the model for ddncodec
    effort: int = 1  # ddncodec's encoder effort

    @property
    def name(self) -> str:
        if self.key == "ddncodec":
            return DDNCodec.name
        if self.key == "standin":
            return "bmshj2018-factorized (stand-in)"
        return PILLOW_FORMATS[self.key].name

    @property
    def timing_only(self) -> bool:
        return self.key == "standin"

    def build(self) -> Codec:
        if self.key == "ddncodec":
            return DDNCodec(self.argument, self.effort)
        if self.key == "standin":
            from ddncodec.bench import standin

            return standin.Codec()
        return PILLOW_FORMATS[self.key]


CODEC_KEYS = ("ddncodec", *PILLOW_FORMATS, "standin")


def plans(
    keys: tuple[str, ...], quick: bool, ddn_qualities: tuple[int, ...] | None, model: str, effort: int = 1
) -> list[CodecPlan]:
    """The workers of a run, ddncodec first (slowest and the one most likely to fail)."""
    result = []
    for key in CODEC_KEYS:
        if key not in keys:
            continue
        if key == "ddncodec":
            qualities = ddn_qualities or (DDN_QUICK if quick else DDN_QUALITIES)
            result.append(CodecPlan(key, qualities, model, effort))
        elif key == "standin":
            result.append(CodecPlan(key, (None,)))
        else:
            result.append(CodecPlan(key, QUICK if quick else PILLOW_FORMATS[key].sweep))
    return result
