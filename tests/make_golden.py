"""``python tests/make_golden.py`` rewrites the golden files in tests/data/golden: .ddn
files coded with the committed test model (tests/data/tiny.safetensors), their decoded
images, and golden.json with the SHA-256 of each file's index maps and decoded pixels.
Version 4 files need a detail filter: tests/data/tiny-detailfilter.safetensors is the
test model with one fitted to the source image (``fit_detail_filter``), written once if
missing and committed (training floats differ between machines; the file does not).

Refresh them only on purpose: when the format version changes (docs/FORMAT.md; the
script writes only the cases not written yet) or the test model is retrained (``--all``). A new format version adds its own cases and keeps the files of
the versions before as they were written (the encoder may change; old files must not). Any other change that makes them fail means old files would
decode differently, which is what tests/test_golden.py is there to catch."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddncodec import codec, container, detail
from ddncodec.codec import Rung
from ddncodec.data import to_tensor
from ddncodec.modelfile import CodecModel, half_precision, load
from ddncodec.postfilter import FLOAT32_ENV, FilterConfig, PostFilter, refined_flags

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "golden"
MODEL = HERE / "data" / "tiny.safetensors"
FILTERED_MODEL = HERE / "data" / "tiny-detailfilter.safetensors"
DETAIL_STEP = 40
SOURCE = HERE / "data" / "kodak" / "kodim23_crop.png"
# name -> (quality, gray, detail step): the ladder's ends and middle, the gray (mode L)
# path, a version-3 file with a detail stream (the test model's ladder has none) and a
# version-4 one, coded with FILTERED_MODEL (the names starting "filtered")
CASES = {
    "q1": (1, False, 0),
    "q5": (5, False, 0),
    "q8": (8, False, 0),
    "gray_q5": (5, True, 0),
    "detail_q8": (8, False, 12),
    "filtered_detail_q8": (8, False, DETAIL_STEP),
    "rows_detail_q8": (8, False, 12),  # version 5: the detail stream row by row, class by class
    "filtered_rows_detail_q8": (8, False, DETAIL_STEP),
    # version 6: the detail stream opens with the smooth blocks (the source with flat colour and a ramp)
    "smooth_detail_q8": (8, False, 12),
    "filtered_smooth_detail_q8": (8, False, DETAIL_STEP),
    # version 7: smooth blocks alone, no layer (the source replaced by two ramps and a flat channel)
    "painted_q8": (8, False, 12),
    # version 8: version 6's, the levels coded with their blocks' last bands (the "smooth" source)
    "summarised_q8": (8, False, 12),
    "filtered_summarised_q8": (8, False, DETAIL_STEP),
    # version 9: version 8's, each block's low frequencies predicted from the DCs around it (the "smooth" source)
    "predicted_q8": (8, False, 12),
    "filtered_predicted_q8": (8, False, DETAIL_STEP),
    # version 10: a colour correction in the header, without a detail stream and with version 9's (the "smooth" source)
    "colour_q8": (8, False, 0),
    "colour_predicted_q8": (8, False, DETAIL_STEP),
    # version 11: version 10's header, the levels' DC classes leaning by the signs around them and escapes
    # coded by bit length (a step of 2: many escape)
    "dc_signs_q8": (8, False, 2),
}


def source_for(name: str, photo: Image.Image) -> Image.Image:
    """The photo, with a flat colour and a gray ramp pasted in for the "smooth" cases; for
    "painted", smooth all over: red a ramp across, green flat, blue a ramp down."""
    pixels = np.array(photo)
    if name.startswith("painted"):
        height, width = pixels.shape[:2]
        pixels[..., 0] = np.linspace(20, 20 + (width - 1) / 2, width).round().astype(np.uint8)[None, :]
        pixels[..., 1] = 30
        pixels[..., 2] = np.linspace(200, 200 - (height - 1) / 4, height).round().astype(np.uint8)[:, None]
        return Image.fromarray(pixels)
    if not any(kind in name for kind in ("smooth", "summarised", "predicted")):
        return photo
    pixels[:, :40] = (200, 30, 40)
    pixels[-24:] = np.linspace(0, 255, pixels.shape[1]).round().astype(np.uint8)[None, :, None]
    return Image.fromarray(pixels)


def model_for(name: str) -> Path:
    return FILTERED_MODEL if name.startswith("filtered") else MODEL


def detail_flags(levels: np.ndarray, net: PostFilter, size: tuple[int, int]) -> torch.Tensor:
    """The detail filter's side input: which 8x8 blocks coded a nonzero level."""
    return refined_flags([torch.from_numpy(detail.coded_blocks(levels))[None]], net.config.cells, size)


def fit_detail_filter(model: CodecModel, original: np.ndarray, steps: int = 80) -> tuple[PostFilter, list[float]]:
    """A small detail filter trained on one image's decode at 3 layers, λ 0 and DETAIL_STEP,
    and its losses (it must learn)."""
    base = codec.encode_pixels(original, "RGB", model, Rung(3, 0.0)).pixels
    levels = detail.residual_levels(original, base, DETAIL_STEP)
    decoded = detail.apply(base, levels, DETAIL_STEP)
    torch.manual_seed(0)
    net = PostFilter(FilterConfig(channels=8, blocks=1, cells=(detail.BLOCK,), step=True))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, target = to_tensor(decoded[None]), to_tensor(original[None])
    flags = detail_flags(levels, net, decoded.shape[:2])
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(net(x, flags, DETAIL_STEP), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return half_precision(net.eval()), losses


def maps_digest(data: bytes, model: CodecModel) -> str:
    maps = codec.read_maps(container.unpack(data), model)
    digest = hashlib.sha256()
    for layer in maps.grids:
        for tile in layer:
            digest.update(np.ascontiguousarray(tile, dtype="<i8").tobytes())
    return digest.hexdigest()


def detail_digest(data: bytes) -> str | None:
    """SHA-256 of a file's detail levels (integers only: exact everywhere), None if it has none."""
    layer = codec.read_detail(container.unpack(data))
    if layer is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(layer.levels, dtype="<i8").tobytes()).hexdigest()


def pixels_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.mode} {image.width}x{image.height} ".encode() + image.tobytes()).hexdigest()


def main() -> None:
    """Write the cases not written yet; ``--all`` rewrites every one (a retrained test model)."""
    torch.set_num_threads(1)
    os.environ[FLOAT32_ENV] = "1"  # the golden pixels are the filters' float32 arithmetic
    rewrite = "--all" in sys.argv[1:]
    known = json.loads((GOLDEN / "golden.json").read_text())["files"] if (GOLDEN / "golden.json").exists() else {}
    photo = Image.open(SOURCE).convert("RGB")
    if not FILTERED_MODEL.exists():
        net, _ = fit_detail_filter(load(MODEL), np.asarray(photo))
        load(MODEL).replace(detailfilter=net).save(FILTERED_MODEL)
    facts = {
        "model": load(MODEL).fingerprint.hex()[:16],
        "filtered_model": load(FILTERED_MODEL).fingerprint.hex()[:16],
        "format_versions": [
            container.VERSION,
            container.DETAIL_VERSION,
            container.FILTERED_DETAIL_VERSION,
            container.ROWS_DETAIL_VERSION,
            container.SMOOTH_DETAIL_VERSION,
            container.PAINTED_VERSION,
            container.SUMMARISED_VERSION,
            container.PREDICTED_VERSION,
            container.COLOUR_VERSION,
            container.DC_SIGNS_VERSION,
        ],
        "files": {},
    }
    for name, (quality, gray, step) in CASES.items():
        if not rewrite and f"{name}.ddn" in known and (GOLDEN / f"{name}.ddn").exists():
            facts["files"][f"{name}.ddn"] = known[f"{name}.ddn"]
            continue
        model = load(model_for(name))
        coder = model.replace(ladder=[[3, 0.0, step]] * 8) if step else model
        source = source_for(name, photo)
        data = codec.encode(source.convert("L") if gray else source, coder, quality).data
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
