"""Pillow in and out: every input mode becomes 8-bit RGB pixels plus the mode the
decoder should hand back ("RGB" or "L"); EXIF orientation is applied first.

Modes: RGB as is; L and 1 as gray (decoded as L); I;16 / I (16-bit gray) scaled to
8 bits, decoded as L; P, CMYK, YCbCr, LAB, HSV converted to RGB. Alpha (RGBA, LA,
PA, P with transparency) is not coded: a fully opaque alpha is dropped, any
transparency is refused with a clear error. Float images (F) are refused.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ddncodec.errors import InputError

_GRAY_16 = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGB"}

ImageSource = Image.Image | str | os.PathLike | bytes


def open_image(source: ImageSource, max_pixels: int, unit: int = 1) -> Image.Image:
    """A loaded, upright Pillow image from a path, encoded bytes or an Image; the first
    frame of a multi-frame file, with the file's frame count in ``info["n_frames"]``.
    Its size padded to multiples of ``unit`` (the model's: the codec's work and memory
    grow with padded pixels) must be within ``max_pixels``, checked from the header alone,
    before any pixel is decoded: a 68-byte PNG may claim 16x6,000,000 px.
    A file that cannot be opened raises OSError (an I/O error, not bad input)."""
    named = not isinstance(source, Image.Image | bytes)
    name = str(source) if named else "image"
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings would add stderr lines; errors still raise
            if isinstance(source, Image.Image):
                image = source
            else:
                bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit applies, next line
                try:
                    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
                finally:
                    Image.MAX_IMAGE_PIXELS = bomb_limit
            if image.width * image.height > max_pixels:
                msg = f"{name}: {image.width}x{image.height} is over the limit of {max_pixels:,} pixels"
                raise InputError(msg)
            check_padded(image.width, image.height, unit, max_pixels, name)
            upright = ImageOps.exif_transpose(image)
            upright.load()
            upright.info["n_frames"] = getattr(image, "n_frames", 1)
            return upright
    except (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        raise  # a file that cannot be opened is an I/O error, as it is
    except Exception as exc:  # a plugin may raise anything on hostile bytes (RuntimeError, NotImplementedError, ...)
        # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" names no file
        reason = "not a format Pillow can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        where = f"{name}: " if named else ""
        kind = type(exc).__name__
        msg = f"{where}cannot read image ({kind}: {reason})" if reason else f"{where}cannot read image ({kind})"
        raise InputError(msg) from exc
    finally:
        if image is not None and image is not source:
            image.close()


def check_padded(width: int, height: int, unit: int, max_pixels: int, name: str = "") -> None:
    """An InputError if the image, padded to multiples of ``unit`` (the model's), is over
    ``max_pixels``: the codec's work and memory grow with padded pixels, and a 200000×1
    image pads to 32 rows. (Tiles are multiples of ``unit`` but the last, so the padded
    tiles of an axis add up to the axis padded to ``unit``.)"""
    padded = -(-width // unit) * unit * (-(-height // unit) * unit)
    if padded > max_pixels:
        where = f"{name}: " if name else ""
        msg = f"{where}a {width}x{height} image pads to {padded:,} pixels, over the limit of {max_pixels:,}"
        raise InputError(msg)


def _opaque(alpha: np.ndarray, mode: str) -> None:
    if (alpha != 255).any():
        msg = (
            f"ddncodec does not code transparency: this {mode} image has {int((alpha != 255).sum()):,} "
            "non-opaque pixels (flatten it onto a background first)"
        )
        raise InputError(msg)


def to_pixels(image: Image.Image) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 RGB (gray replicated) and the mode to decode to, "RGB" or "L"."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _ALPHA:
        image = image.convert("LA" if _ALPHA[mode] == "L" else "RGBA")
        _opaque(np.asarray(image.getchannel("A")), mode)
        image = image.convert(_ALPHA[mode])
        mode = image.mode
    if mode in _GRAY_16:
        wide = np.asarray(image).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            msg = f"{mode} image values span {wide.min()}..{wide.max()}, outside 0..65535: convert to 16-bit gray first"
            raise InputError(msg)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
    elif mode in ("L", "1"):
        gray = np.asarray(image.convert("L"))
    elif mode == "F":
        msg = "floating-point (mode F) images are not supported: convert to 8 or 16 bit first"
        raise InputError(msg)
    else:
        try:
            return np.asarray(image.convert("RGB")), "RGB"
        except (ValueError, OSError) as exc:
            msg = f"cannot convert a {mode} image to RGB ({exc})"
            raise InputError(msg) from exc
    return np.repeat(gray[:, :, None], 3, axis=2), "L"


# The largest side each output format can hold (Pillow's writers, or the format itself).
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "GIF": 65535, "TGA": 65535, "ICO": 256, "AVIF": 65536, "PCX": 65535}


def check_fits(width: int, height: int, fmt: str) -> None:
    """Refuse, before any decoding, an image too large for the output format."""
    side = MAX_SIDE.get(fmt)
    if side is not None and max(width, height) > side:
        msg = f"a {width}x{height} image does not fit in {fmt} (at most {side} px a side): write .png instead"
        raise InputError(msg)


def from_pixels(pixels: np.ndarray, mode: str) -> Image.Image:
    """(H, W, 3) uint8 -> a Pillow image of ``mode``; gray is the rounded channel mean."""
    if mode == "L":
        mean = (pixels.astype(np.uint16).sum(2) + 1) // 3
        return Image.fromarray(mean.astype(np.uint8), "L")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def pad(pixels: np.ndarray, unit: int) -> np.ndarray:
    """Edge-replicate (H, W, C) up to multiples of ``unit``: no hard edge for the model to code.
    An image that needs no padding is returned as is, not copied: callers only read it."""
    height, width = pixels.shape[:2]
    if not (height % unit or width % unit):
        return pixels
    return np.pad(pixels, ((0, -height % unit), (0, -width % unit), (0, 0)), mode="edge")
