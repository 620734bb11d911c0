"""Version 8 of the default model: version 7's network, post-filter and table sets
(same fingerprint, so every version-7 file still decodes) with a new ladder: q4-q8 code
the detail layer on q1's 6-layer walk instead of q3's 12-layer one, and q4 becomes a
detail rung. Measured first on 16 whole ``bsds500/val`` photos (the tuning set; the
numbers are in ``models/default.md``); this script sets the ladder and re-measures the
card's ``ladder_on_val`` on tune's validation crops, as ``ddncodec tune`` would.

    python models/training/ladder_v8.py ../shared/datasets/bsds500/val
"""

import sys
from pathlib import Path

import torch

from ddncodec import modelfile
from ddncodec.ladder import Rung
from ddncodec.options import TuneOptions
from ddncodec.tune import ladder_on_val, load_images

LADDER = (
    Rung(6, 1e4),
    Rung(12, 1e4),
    Rung(12, 3000.0),
    Rung(6, 1e4, 100),
    Rung(6, 1e4, 66),
    Rung(6, 1e4, 37),
    Rung(6, 1e4, 20),
    Rung(6, 1e4, 8),
)

torch.set_num_threads(1)
path = modelfile.resolve(modelfile.DEFAULT_MODEL)
old = modelfile.load(path)
model = old.replace(ladder=LADDER)
images = load_images([Path(sys.argv[1])], TuneOptions.val_images, TuneOptions.val_size)
model = model.replace(card={**model.card, "ladder_on_val": ladder_on_val(model, images)})
assert model.fingerprint == old.fingerprint
model.save(path)
for point in model.card["ladder_on_val"]:
    print(point)
