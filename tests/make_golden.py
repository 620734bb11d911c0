"""``python tests/make_golden.py`` rewrites the golden files in tests/data/golden: .ddn
files coded with the committed test model (tests/data/tiny.safetensors), their decoded
images, and golden.json with the SHA-256 of each file's index maps and decoded pixels.

Refresh them only on purpose: when the format version changes (docs/FORMAT.md) or the
test model is retrained. A new format version adds its own cases and keeps the files of
the versions before as they were written (the encoder may change; old files must not). Any other change that makes them fail means old files would
decode differently, which is what tests/test_golden.py is there to catch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddncodec import codec, container, detail
from ddncodec.modelfile import CodecModel, load

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "golden"
MODEL = HERE / "data" / "tiny.safetensors"
SOURCE = HERE / "data" / "kodak" / "kodim23_crop.png"
# name -> (quality, gray, detail step): the ladder's ends and middle, the gray (mode L)
# path, and a version-3 file with a detail stream (the test model's ladder has none)
CASES = {
    "q1": (1, False, 0),
    "q5": (5, False, 0),
    "q8": (8, False, 0),
    "gray_q5": (5, True, 0),
    "detail_q8": (8, False, 12),
}


def maps_digest(data: bytes, model: CodecModel) -> str:
    maps = codec.read_maps(container.unpack(data), model)
    digest = hashlib.sha256()
    for layer in maps:
        for tile in layer:
            digest.update(np.ascontiguousarray(tile, dtype="<i8").tobytes())
    return digest.hexdigest()


def detail_digest(data: bytes) -> str | None:
    """SHA-256 of a file's detail levels (integers only: exact everywhere), None if it has none."""
    parsed = container.unpack(data)
    if parsed.detail is None:
        return None
    levels = detail.decode(parsed.detail, parsed.header.height, parsed.header.width)
    return hashlib.sha256(np.ascontiguousarray(levels, dtype="<i8").tobytes()).hexdigest()


def pixels_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.mode} {image.width}x{image.height} ".encode() + image.tobytes()).hexdigest()


def main() -> None:
    torch.set_num_threads(1)
    model = load(MODEL)
    photo = Image.open(SOURCE).convert("RGB")
    facts = {
        "model": model.fingerprint.hex()[:16],
        "format_versions": [container.VERSION, container.DETAIL_VERSION],
        "files": {},
    }
    for name, (quality, gray, step) in CASES.items():
        coder = model.replace(ladder=[[3, 0.0, step]] * 8) if step else model
        data = codec.encode(photo.convert("L") if gray else photo, coder, quality).data
        (GOLDEN / f"{name}.ddn").write_bytes(data)
        decoded = codec.decode(data, model)
        decoded.save(GOLDEN / f"{name}.png")
        facts["files"][f"{name}.ddn"] = {
            "maps_sha256": maps_digest(data, model),
            "pixels_sha256": pixels_digest(decoded),
            **({"detail_sha256": detail_digest(data)} if step else {}),
        }
    (GOLDEN / "golden.json").write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    main()
