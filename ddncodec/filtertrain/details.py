"""The detail filter's pool (``DetailDecodes``): the training photos, whole, walked as the
ladder's detail rungs walk them (with the post-filter where the encoder takes it), then
the detail layer at DETAIL_POOL_STEPS random steps each, log-uniform in DETAIL_STEP_RANGE;
the filter reads which 8×8 blocks that layer coded and the step."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddncodec import codec, detail
from ddncodec.atomic import write_atomically
from ddncodec.codec import encoder
from ddncodec.data import list_images, load_rgb
from ddncodec.errors import InputError
from ddncodec.filtertrain.pools import ALIGN, POOL_CHUNK, Log, Windows, psnr
from ddncodec.modelfile import CodecModel
from ddncodec.options import FilterTrainOptions
from ddncodec.postfilter import PostFilter, refined_flags
from ddncodec.tensors import from_uint8, to_uint8

DETAIL_POOL_STEPS = 3  # detail steps per training photo
# Log-uniform: the steps of version 9's detail rungs (8-100) and a margin. The shipped filter learned these;
# q3's 170 lies past them (the filter gains 0.30 dB there, 0.44 at 100), yet the same filter fine-tuned
# on (8, 255) measured -0.11 % BD-rate on bsds500/val (+0.05 dB at q3, -0.03 at q8): not worth a version.
DETAIL_STEP_RANGE = (8, 140)
DETAIL_VAL_STEPS = (100, 37, 8)  # q4, q6 and q8's steps


@dataclass(frozen=True)
class DetailDecode:
    """A photo (3, H, W) uint8, its decode with the detail layer at ``step`` and which 8×8
    blocks that layer coded, (rows, cols) uint8 over the image padded to whole blocks."""

    truth: torch.Tensor
    decoded: torch.Tensor
    coded: torch.Tensor
    step: int


@dataclass(frozen=True)
class DetailDecodes:
    """Photos decoded with the detail layer; ``cells`` are the detail filter's (``(8,)``,
    or none for a pixels-only filter)."""

    entries: list[DetailDecode]
    cells: tuple[int, ...]

    def _flags(self, coded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return refined_flags([coded], self.cells, size)

    def windows(self, batch: int, window: int) -> Windows:
        decoded, target, coded, steps = [], [], [], []
        for pick in torch.randint(len(self.entries), (batch,)).tolist():
            entry = self.entries[pick]
            height, width = entry.truth.shape[-2:]
            top = int(torch.randint((height - window) // ALIGN + 1, ())) * ALIGN
            left = int(torch.randint((width - window) // ALIGN + 1, ())) * ALIGN
            rows, cols = slice(top, top + window), slice(left, left + window)
            decoded.append(entry.decoded[:, rows, cols])
            target.append(entry.truth[:, rows, cols])
            b = detail.BLOCK
            coded.append(entry.coded[top // b : (top + window) // b, left // b : (left + window) // b])
            steps.append(entry.step)
        flags = self._flags(torch.stack(coded), (window, window))
        return Windows(torch.stack(decoded), torch.stack(target), flags, torch.tensor(steps))

    @torch.inference_mode()
    def validate(self, net: PostFilter) -> list[tuple[float, float]]:
        """Per step, in the order first met: (mean PSNR decoded, mean PSNR filtered)."""
        net.eval()
        by_step: dict[int, list[tuple[float, float]]] = {}
        for e in self.entries:
            flags = self._flags(e.coded[None], e.decoded.shape[-2:])
            filtered = to_uint8(net(from_uint8(e.decoded[None]), flags, e.step))[0]
            by_step.setdefault(e.step, []).append((psnr(e.decoded, e.truth), psnr(filtered, e.truth)))
        net.train()
        return [(float(np.mean([b for b, _ in v])), float(np.mean([a for _, a in v]))) for v in by_step.values()]


def detail_walk(model: CodecModel, rungs: list[codec.Rung] | None) -> codec.Rung:
    """The walk under the detail layer: that of the first detail rung of ``rungs`` (by
    default the model's ladder: q2's 4 layers, which q3-q5 walk too; q6-q8 walk 6, which
    matter little under their fine steps)."""
    base = next((r for r in rungs or codec.ladder(model) if r.detail), None)
    if base is None:
        msg = "--detail: the model's ladder has no detail rung to walk as"
        raise InputError(msg)
    return codec.Rung(base.layers, base.lam)


def _with_detail(model: CodecModel, photo: np.ndarray, walk: codec.Rung, steps: list[int]) -> list[DetailDecode]:
    """``photo`` as the encoder codes it on ``walk``, post-filtered and with the walk's colour
    correction (format version 10), then with the detail layer at each step."""
    coded = encoder.code(photo, model, walk)
    walked, _ = encoder.post_filter_choice(coded, photo, "RGB", model)
    walked, _ = encoder.corrected_walk(coded, photo, "RGB", walked)
    truth = _planar(photo)  # one tensor for every step: stored once in a pool file
    out = []
    for step in steps:
        levels = detail.residual_levels(photo, walked, step)
        coded = torch.from_numpy(detail.coded_blocks(levels).astype(np.uint8))
        out.append(DetailDecode(truth, _planar(detail.apply(walked, levels, step)), coded, step))
    return out


def _planar(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 (a copy: a photo's array may be read-only)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def detail_pool(model: CodecModel, options: FilterTrainOptions, cells: tuple[int, ...], log: Log) -> DetailDecodes:
    """The detail filter's training pool: every photo of ``options.data`` at
    DETAIL_POOL_STEPS random steps, built or resumed chunk by chunk."""
    walk = detail_walk(model, options.rungs)
    paths = list_images(options.data)
    rng = np.random.default_rng(options.seed)  # every photo's steps drawn at once: a resumed build draws the same
    steps = np.exp(rng.uniform(*np.log(DETAIL_STEP_RANGE), (len(paths), DETAIL_POOL_STEPS))).round().astype(int)
    entries = []
    for start in range(0, len(paths), POOL_CHUNK):
        path = options.work / f"detail-pool-{start:05d}.pt"
        if not path.exists():
            t0 = time.perf_counter()
            chunk = []
            for photo, photo_steps in zip(
                paths[start : start + POOL_CHUNK], steps[start : start + POOL_CHUNK], strict=True
            ):
                chunk += _with_detail(model, _photo(photo, options.window), walk, photo_steps.tolist())
            saved = {name: [getattr(e, name) for e in chunk] for name in ("truth", "decoded", "coded", "step")}
            write_atomically(path, lambda tmp, s=saved: torch.save(s, tmp))
            images = min(start + POOL_CHUNK, len(paths))
            log({"event": "pool", "images": images, "seconds": round(time.perf_counter() - t0, 1)})
        saved = torch.load(path, weights_only=True)
        fields = zip(saved["truth"], saved["decoded"], saved["coded"], saved["step"], strict=True)
        entries += [DetailDecode(*entry) for entry in fields]
    return DetailDecodes(entries, cells)


def _photo(path: Path, window: int) -> np.ndarray:
    photo = load_rgb(path)
    if min(photo.shape[:2]) < window:
        msg = f"{path}: {photo.shape[1]}x{photo.shape[0]} is smaller than the {window}px window"
        raise InputError(msg)
    return photo


def held_out_details(model: CodecModel, options: FilterTrainOptions, cells: tuple[int, ...]) -> DetailDecodes:
    """The first validation photos, whole (cut to whole 8×8 blocks), at DETAIL_VAL_STEPS."""
    walk = detail_walk(model, options.rungs)
    entries = []
    for path in list_images(options.val)[: options.val_images]:
        photo = load_rgb(path)
        height, width = (n - n % detail.BLOCK for n in photo.shape[:2])
        for e in _with_detail(model, photo, walk, list(DETAIL_VAL_STEPS)):
            cut = DetailDecode(e.truth[:, :height, :width], e.decoded[:, :height, :width], e.coded, e.step)
            entries.append(cut)
    return DetailDecodes(entries, cells)
