"""The first counts of the detail levels' coder (format version 8, ``ddncodec/level_priors.npz``).

Encodes every fourth photo of the folders given (sorted by name) at the detail steps of q4–q8
on the default model's walk, tallies how often each symbol meets each class when the levels are coded
(``levels.tallies``), and turns the pooled tallies into counts worth STRENGTH coded symbols
per class, never under FLOOR. Part of the format: a new table needs a new format version.

    python models/training/level_priors.py ../shared/datasets/bsds500/train ../shared/datasets/bsds500/test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ddncodec import codec, detail, levels
from ddncodec.codec import encoder
from ddncodec.codec.models import ladder
from ddncodec.ladder import Rung

STRENGTH = 100  # coded symbols' worth of trust in the trained odds (on bsds500/val 56 and 150 gave within 0.3 %)
FLOOR = 4  # an eighth of a coded symbol: no symbol is ever impossible
STEPS = (100, 66, 37, 20, 8)  # q4-q8's detail steps, the ladder's detail rungs when the table was trained


def counts_from(tally: np.ndarray) -> np.ndarray:
    """Pooled tallies (classes, K) -> integer first counts: each class's odds (its tally plus
    a half, so an unseen class starts uniform) scaled to STRENGTH symbols of COUNT_INCREMENT."""
    odds = (tally + 0.5) / (tally + 0.5).sum(1, keepdims=True)
    return np.maximum(np.round(odds * STRENGTH * levels.COUNT_INCREMENT), FLOOR).astype(np.int64)


def photo_tallies(path: Path, model: codec.CodecModel) -> tuple[np.ndarray, np.ndarray]:
    """The tallies of one photo's levels at each of STEPS, on the walk under ``model``'s detail rungs."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    found = [
        np.zeros((levels.SUMMARISED_CLASSES, levels.SYMBOLS), np.int64),
        np.zeros((levels.SUMMARY_CLASSES, levels.LASTS), np.int64),
    ]
    walk = next(r for r in ladder(model) if r.detail)  # the first detail rung's walk
    for step in STEPS:
        rung = Rung(walk.layers, walk.lam, step)
        coded = encoder.code(pixels, model, rung)
        decoded, _ = encoder.post_filter_choice(coded, pixels, "RGB", model)
        skip = coded.planes.smooth
        coded_levels = detail.residual_levels(pixels, decoded, rung.detail, skip=skip)
        for total, tally in zip(found, levels.tallies(coded_levels, skip), strict=True):
            total += tally
    return found[0], found[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=levels.PRIORS)
    args = parser.parse_args()
    model = codec.load_model("default")
    photos = sorted(p for folder in args.folders for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[::4]
    level_tally, last_tally = 0, 0
    for i, path in enumerate(photos):
        a, b = photo_tallies(path, model)
        level_tally, last_tally = level_tally + a, last_tally + b
        print(f"{i + 1}/{len(photos)} {path.name}", flush=True)
    np.savez_compressed(args.out, levels=counts_from(level_tally), lasts=counts_from(last_tally))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
