"""The first counts of the detail levels' coder (format version 11, ``ddncodec/level_priors_11.npz``).

Encodes every fourth photo of the folders given (sorted by name) at each detail rung of the default
model's ladder as the encoder does (the rung's walk, post-filtered and colour-corrected, then the
detail layer), tallies how often each symbol meets each class when the levels are coded in version
11's classes (``levels.tallies``), and turns the tallies, pooled over the coarse steps and over the
fine ones apart (``levels.FINE_STEP``), into two tables of counts worth STRENGTH coded symbols per
class, never under FLOOR. Part of the format: a new table needs a new format version.
Version 8's table (``ddncodec/level_priors.npz``) was made by this recipe at ``2f3f86b``: q4–q8's
steps on the first detail rung's walk, in version 8's classes.

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

# Coded symbols' worth of trust in the trained odds. For version 11's table, on 17 bsds500/val photos,
# BD-rate over q3-q8 against version 8's classes and table: -0.70 % with 50, -0.57 % with 100, -0.30 %
# with 200, -0.69 % with 25 (a first run's counts at 100, scaled). Version 8's table took 100.
STRENGTH = 50
FLOOR = 2  # a sixteenth of a coded symbol: no symbol is ever impossible


def counts_from(tally: np.ndarray) -> np.ndarray:
    """Pooled tallies (classes, K) -> integer first counts: each class's odds (its tally plus
    a half, so an unseen class starts uniform) scaled to STRENGTH symbols of COUNT_INCREMENT."""
    odds = (tally + 0.5) / (tally + 0.5).sum(1, keepdims=True)
    return np.maximum(np.round(odds * STRENGTH * levels.COUNT_INCREMENT), FLOOR).astype(np.int64)


def photo_tallies(path: Path, model: codec.CodecModel) -> tuple[np.ndarray, np.ndarray]:
    """The tallies of one photo's levels at each detail rung of ``model``'s ladder, those of
    the coarse steps apart from the fine ones (``levels.FINE_STEP``): (2, classes, K) each."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    found = [
        np.zeros((2, levels.SIGNED_SUMMARISED_CLASSES, levels.SYMBOLS), np.int64),
        np.zeros((2, levels.SUMMARY_CLASSES, levels.LASTS), np.int64),
    ]
    for rung in (r for r in ladder(model) if r.detail):
        fine = int(rung.detail < levels.FINE_STEP)
        coded = encoder.code(pixels, model, rung)
        decoded, _ = encoder.post_filter_choice(coded, pixels, "RGB", model)
        decoded, _ = encoder.corrected_walk(coded, pixels, "RGB", decoded)
        skip = coded.planes.smooth
        coded_levels = detail.residual_levels(pixels, decoded, rung.detail, skip=skip)
        for total, tally in zip(found, levels.tallies(coded_levels, skip), strict=True):
            total[fine] += tally
    return found[0], found[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=levels.PRIORS_11)
    args = parser.parse_args()
    model = codec.load_model("default")
    photos = sorted(p for folder in args.folders for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[::4]
    level_tally, last_tally = 0, 0
    for i, path in enumerate(photos):
        a, b = photo_tallies(path, model)
        level_tally, last_tally = level_tally + a, last_tally + b
        print(f"{i + 1}/{len(photos)} {path.name}", flush=True)
    tables = {
        name: np.stack([counts_from(t) for t in tally])
        for name, tally in (("levels", level_tally), ("lasts", last_tally))
    }
    np.savez_compressed(args.out, **tables)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
