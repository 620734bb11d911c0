"""Pillow in and out: every input mode becomes 8-bit RGB pixels plus the mode the
decoder should hand back ("RGB" or "L"); EXIF orientation is applied first.

Modes: RGB as is; L and 1 as gray (decoded as L); I;16 / I (16-bit gray) scaled to
8 bits, decoded as L; P, CMYK, YCbCr, LAB, HSV converted to RGB. Alpha (RGBA, LA,
PA, P with transparency) is not coded: a fully opaque alpha is dropped, any
transparency is refused with a clear error. Float images (F) are refused.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Sized
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ddncodec.errors import InputError, OptionError

_GRAY_16 = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGB"}

ImageSource = Image.Image | np.ndarray | str | os.PathLike | bytes | bytearray | memoryview
_BYTES = bytes | bytearray | memoryview


def describe(value: object) -> str:
    """A value in a few words for an error message: its type, and an array's shape and
    dtype or a sequence's length, never its contents (which may run to megabytes)."""
    kind = type(value).__qualname__
    if type(value).__module__ != "builtins":
        kind = f"{type(value).__module__.partition('.')[0]}.{kind}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{kind} of shape {tuple(value.shape)}, dtype {value.dtype}"
    if isinstance(value, Sized):
        return f"{kind} of length {len(value)}"
    return kind


def from_array(array: np.ndarray) -> Image.Image:
    """A uint8 array (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA as a Pillow image."""
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    channels = 2 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    mode = modes.get(channels)
    if array.dtype != np.uint8 or mode is None or min(array.shape[:2], default=0) < 1:
        msg = f"an image array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4); got {describe(array)}"
        raise InputError(msg)
    return Image.fromarray(np.ascontiguousarray(array), mode)


def open_image(source: ImageSource, max_pixels: int, unit: int = 1) -> Image.Image:
    """A loaded, upright Pillow image from a path, encoded bytes, a uint8 array or an
    Image; the first frame of a multi-frame file, with the file's frame count in
    ``info["n_frames"]``. Its size padded to multiples of ``unit`` (the model's: the
    codec's work and memory grow with padded pixels) must be within ``max_pixels``,
    checked from the header alone, before any pixel is decoded: a 68-byte PNG may claim
    16x6,000,000 px. A file that cannot be opened raises OSError (an I/O error, not bad
    input); anything else than these sources, a TypeError that describes it."""
    if not isinstance(source, Image.Image | np.ndarray | str | os.PathLike | _BYTES):
        msg = f"an image must be a Pillow image, a uint8 array, a path or a file's bytes, not {describe(source)}"
        raise TypeError(msg)
    named = isinstance(source, str | os.PathLike)
    name = os.fsdecode(source) if named else "image"
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings would add stderr lines; errors still raise
            if isinstance(source, Image.Image):
                image = source
            elif isinstance(source, np.ndarray):
                image = from_array(source)
            else:
                bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit applies, next line
                try:
                    image = Image.open(io.BytesIO(source) if isinstance(source, _BYTES) else Path(os.fsdecode(source)))
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


WORK_LAYERS = 12
"""The deepest walk of the quality ladder: ``max_pixels`` counts the pixels of a walk of up to
this many layers as they are, and those of a deeper one (``--layers``, or a crafted file) by
the square of its depth's ratio to this, since every further layer costs more than the one
before it (decoding 1 MP on one tile: 2.04 s at 12 layers, 4.15 s at 18, 7.26 s at 26)."""


def check_padded(width: int, height: int, unit: int, max_pixels: int, name: str = "", layers: int = 0) -> None:
    """An InputError if the image, padded to multiples of ``unit`` (the model's) and walked
    ``layers`` deep (0: no deeper than the ladder), is over ``max_pixels``: the codec's work and memory grow with padded
    pixels, and a 200000×1 image pads to 32 rows. (Tiles are multiples of ``unit`` but the
    last, so the padded tiles of an axis add up to the axis padded to ``unit``.)"""
    padded = -(-width // unit) * unit * (-(-height // unit) * unit)
    counted = padded * max(layers, WORK_LAYERS) ** 2 // WORK_LAYERS**2
    if counted > max_pixels:
        where = f"{name}: " if name else ""
        deep = f" and walks {layers} layers (counted as {counted:,})" if counted > padded else ""
        msg = f"{where}a {width}x{height} image pads to {padded:,} pixels{deep}, over the limit of {max_pixels:,}"
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


def output_format(path: Path) -> str:
    """The Pillow format an output image path's suffix names, checked before any work: an
    OptionError (exit 1) for a suffix Pillow does not know, a format it cannot write an
    8-bit RGB image in (.xbm, .psd, ...), or .ddn (``ddncodec encode`` makes those)."""
    suffix = path.suffix.lower()
    if suffix == ".ddn":
        msg = f"{path}: an image output, not a .ddn file (name it .png, .webp, ...; ddncodec encode makes .ddn files)"
        raise OptionError(msg)
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        msg = f"{path}: unknown image file extension (use .png)"
        raise OptionError(msg)
    if not _writes_rgb(fmt):
        msg = f"{path}: Pillow cannot write an RGB image as {fmt} (use .png)"
        raise OptionError(msg)
    return fmt


@functools.cache
def _writes_rgb(fmt: str) -> bool:
    """Whether Pillow writes an 8-bit RGB image in ``fmt``: tried on one pixel, since many
    formats it reads it cannot write (no writer, or one for other modes only)."""
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except Exception:  # a writer's refusal: KeyError (none), OSError, ValueError (the mode)
        return False
    return True


# The largest side each output format can hold (Pillow's writers, or the format itself).
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "GIF": 65535, "TGA": 65535, "ICO": 256, "AVIF": 65536, "PCX": 65535}


def check_fits(width: int, height: int, fmt: str) -> None:
    """Refuse, before any decoding, an image too large for the output format."""
    side = MAX_SIDE.get(fmt)
    if side is not None and max(width, height) > side:
        msg = f"a {width}x{height} image does not fit in {fmt} (at most {side} px a side): write .png instead"
        raise InputError(msg)


def from_pixels(pixels: np.ndarray, mode: str) -> Image.Image:
    """(H, W, 3) uint8 -> a Pillow image of ``mode`` (``in_mode``)."""
    return Image.fromarray(in_mode(pixels, mode), mode)


def in_mode(pixels: np.ndarray, mode: str) -> np.ndarray:
    """(H, W, 3) uint8 -> the array of ``mode``: (H, W) gray, the rounded channel mean, for
    "L"; the pixels themselves, contiguous, for "RGB"."""
    if mode == "L":
        return ((pixels.astype(np.uint16).sum(2) + 1) // 3).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def pad(pixels: np.ndarray, unit: int) -> np.ndarray:
    """Edge-replicate (H, W, C) up to multiples of ``unit``: no hard edge for the model to code.
    An image that needs no padding is returned as is, not copied: callers only read it."""
    height, width = pixels.shape[:2]
    if not (height % unit or width % unit):
        return pixels
    return np.pad(pixels, ((0, -height % unit), (0, -width % unit), (0, 0)), mode="edge")
