"""Training photos: folders of any Pillow format, held in memory as uint8 RGB, served
as random crops with flips from a seeded generator (so a resumed run draws the same)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ddncodec.errors import InputError
from ddncodec.tensors import to_tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"}


def list_images(folders: list[Path]) -> list[Path]:
    """Image files directly inside each folder, sorted; a one-line error if there are none."""
    files = []
    for folder in folders:
        if not folder.is_dir():
            msg = f"{folder}: not a folder"
            raise InputError(msg)
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            msg = f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            raise InputError(msg)
        files += found
    return files


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8, EXIF orientation applied; InputError naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        msg = f"{path}: cannot read image ({exc})"
        raise InputError(msg) from exc


class CropSampler:
    """Random crops with horizontal/vertical flips from images held in memory."""

    def __init__(self, folders: list[Path], crop: int, seed: int) -> None:
        self.crop = crop
        self.images = []
        for path in list_images(folders):
            image = load_rgb(path)
            if min(image.shape[:2]) < crop:
                msg = f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than the {crop}px crop"
                raise InputError(msg)
            self.images.append(image)
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> torch.Tensor:
        g, c = self.generator, self.crop
        crops = []
        for _ in range(size):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            top = int(torch.randint(image.shape[0] - c + 1, (1,), generator=g))
            left = int(torch.randint(image.shape[1] - c + 1, (1,), generator=g))
            crop = image[top : top + c, left : left + c]
            flips = torch.randint(2, (2,), generator=g)
            if flips[0]:
                crop = crop[:, ::-1]
            if flips[1]:
                crop = crop[::-1]
            crops.append(crop)
        return to_tensor(np.stack(crops))


def center_crops(folders: list[Path], size: int, limit: int) -> torch.Tensor:
    """Deterministic center crops (the validation set), at most ``limit`` images."""
    crops = []
    for path in list_images(folders)[:limit]:
        image = load_rgb(path)
        if min(image.shape[:2]) < size:
            msg = f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than the {size}px crop"
            raise InputError(msg)
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(image[top : top + size, left : left + size])
    return to_tensor(np.stack(crops))
