"""Version 9 of the default model: version 8 plus a detail filter, a post-filter that runs
after the detail layer (format version 4; files that do not use it keep version 8's
fingerprint, so every version-8 file still decodes). Trained on what the encoder really
outputs at the detail rungs: training photos (``bsds500`` train + test) walked on q1's
path (with the post-filter where the encoder takes it), then the detail layer at three
log-uniform steps in [8, 140] each. Validation: 16 ``bsds500/val`` photos at steps 100,
37 and 8, the mean PSNR gain of the filter over the detail decode.

    python models/training/detailfilter_v9.py pool  WORK ../shared/datasets/bsds500/train ../shared/datasets/bsds500/test
    python models/training/detailfilter_v9.py train WORK ../shared/datasets/bsds500/val [--steps 12000]
    python models/training/detailfilter_v9.py install WORK

``train`` resumes from WORK/detailfilter.pt and logs JSON lines to WORK/detailfilter.log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddncodec import codec, detail, modelfile
from ddncodec.data import list_images, load_rgb, to_tensor
from ddncodec.postfilter import FilterConfig, PostFilter, refined_flags, to_uint8

CONFIG = FilterConfig(channels=48, blocks=4, cells=(detail.BLOCK,), step=True)
STEPS_PER_IMAGE = 3
STEP_RANGE = (8, 140)
CROP, BATCH, ALIGN = 128, 16, 32  # windows aligned to the DDN unit, so both grids sit as in a decode
VAL_IMAGES, VAL_STEPS = 16, (100, 37, 8)


def walk_of(model: codec.CodecModel, image: np.ndarray) -> np.ndarray:
    """What the decoder holds before the detail layer of the ladder's detail rungs (q1's walk)."""
    base = next(r for r in codec.ladder(model) if r.detail)
    return codec.encode_pixels(image, "RGB", model, codec.Rung(base.layers, base.lam)).pixels


def with_detail(image: np.ndarray, walk: np.ndarray, step: int) -> dict:
    levels = detail.residual_levels(image, walk, step)
    return {
        "truth": image,
        "decoded": detail.apply(walk, levels, step),
        "step": step,
        "coded": detail.coded_blocks(levels),
    }


def flags(coded: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return refined_flags([torch.from_numpy(coded)], CONFIG.cells, size)


def pool(work: Path, folders: list[Path]) -> None:
    model = codec.load_model("default")
    rng = np.random.default_rng(0)
    entries = []
    for i, path in enumerate(list_images(folders)):
        image = load_rgb(path)
        walk = walk_of(model, image)
        for step in np.exp(rng.uniform(*np.log(STEP_RANGE), STEPS_PER_IMAGE)).round().astype(int):
            entries.append(with_detail(image, walk, int(step)))
        if i % 50 == 0:
            print(f"{i} images", flush=True)
    np.save(work / "pool.npy", entries, allow_pickle=True)


def validation(folder: Path) -> list[dict]:
    model = codec.load_model("default")
    out = []
    for path in list_images([folder])[:VAL_IMAGES]:
        image = load_rgb(path)
        height, width = (n - n % detail.BLOCK for n in image.shape[:2])
        walk = walk_of(model, image)
        for step in VAL_STEPS:
            entry = with_detail(image, walk, step)
            entry["truth"], entry["decoded"] = entry["truth"][:height, :width], entry["decoded"][:height, :width]
            out.append(entry)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


@torch.inference_mode()
def gains(net: PostFilter, entries: list[dict]) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for e in entries:
        x = to_tensor(e["decoded"][None])
        y = to_uint8(net(x, flags(e["coded"][None], x.shape[-2:]), e["step"]))[0].permute(1, 2, 0).numpy()
        by_step.setdefault(e["step"], []).append(psnr(y, e["truth"]) - psnr(e["decoded"], e["truth"]))
    return {step: round(float(np.mean(v)), 4) for step, v in by_step.items()}


def train(work: Path, val: Path, steps: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    entries = np.load(work / "pool.npy", allow_pickle=True)
    held_out = validation(val)
    net = PostFilter(CONFIG)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    ckpt, log = work / "detailfilter.pt", (work / "detailfilter.log.jsonl").open("a")
    start = 0
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        net.load_state_dict(saved["net"])
        optimiser.load_state_dict(saved["opt"])
        start = saved["step"]
    rng = np.random.default_rng(start)
    began, running = time.time(), 0.0
    for it in range(start, steps):
        for group in optimiser.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * it / steps))
        windows = []
        for _ in range(BATCH):
            e = entries[rng.integers(len(entries))]
            height, width = e["truth"].shape[:2]
            top = rng.integers(0, (height - CROP) // ALIGN + 1) * ALIGN
            left = rng.integers(0, (width - CROP) // ALIGN + 1) * ALIGN
            b = detail.BLOCK
            windows.append(
                (
                    e["decoded"][top : top + CROP, left : left + CROP],
                    e["truth"][top : top + CROP, left : left + CROP],
                    e["coded"][top // b : (top + CROP) // b, left // b : (left + CROP) // b],
                    e["step"],
                )
            )
        decoded, truth, coded, step = zip(*windows, strict=True)
        x = to_tensor(np.stack(decoded))
        out = net(x, flags(np.stack(coded), (CROP, CROP)), torch.tensor(step))
        loss = F.mse_loss(out, to_tensor(np.stack(truth)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        running = 0.98 * running + 0.02 * loss.item()
        if (it + 1) % 500 == 0:
            torch.save({"net": net.state_dict(), "opt": optimiser.state_dict(), "step": it + 1}, ckpt)
            record = {"step": it + 1, "time": round(time.time() - began), "loss": running}
            log.write(json.dumps(record | {"val_gain_db": gains(net, held_out)}) + "\n")
            log.flush()


def install(work: Path) -> None:
    """The trained filter, rounded to float16, into models/default.safetensors."""
    saved = torch.load(work / "detailfilter.pt", weights_only=True)
    net = PostFilter(CONFIG)
    net.load_state_dict(saved["net"])
    model = codec.load_model("default")
    card = model.card | {"detail_filter": {"config": CONFIG.to_json(), "steps": saved["step"]}}
    updated = model.replace(detailfilter=modelfile.half_precision(net.eval()), card=card)
    assert updated.core_fingerprint == model.core_fingerprint  # every file without the filter stays valid
    updated.save(modelfile.resolve("default"))
    print(f"fingerprint {updated.fingerprint.hex()[:8]}, core {updated.core_fingerprint.hex()[:8]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("pool", "train", "install"))
    parser.add_argument("work", type=Path)
    parser.add_argument("folders", type=Path, nargs="*")
    parser.add_argument("--steps", type=int, default=12000)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "pool":
        pool(args.work, args.folders)
    elif args.stage == "train":
        train(args.work, args.folders[0], args.steps)
    else:
        install(args.work)


if __name__ == "__main__":
    main()
