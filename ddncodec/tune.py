"""Offline fitting of what a model needs beyond its weights: prior tables counted
with the encoder it will actually run, and the quality ladder (quality -> layers, λ).

Priors counted with the plain nearest choice underestimate how often the rate-aware
encoder picks "keep" (symbol 0), and every rung keeps at its own rate, so
``recount_priors`` counts one table set per rung of a ladder: the symbols, by context,
that the rate-aware encoder chooses at that rung's λ on training crops (the choice
depends on the tables' bit costs, so it may run a few rounds). ``tune_ladder`` encodes
validation images over a grid of (layers, λ), keeps the rate-distortion front and picks
eight rungs spread evenly in log-bpp along it, preferring points on its operational hull
and, where two are about as good at the same rate, the one that runs fewer layers.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddncodec import codec, container
from ddncodec.codec import Rung
from ddncodec.context import CONTEXTS, count_contexts
from ddncodec.data import CropSampler, list_images, load_rgb
from ddncodec.ladder import QUALITIES
from ddncodec.model import DDN, Chooser
from ddncodec.modelfile import CodecModel
from ddncodec.options import TuneOptions
from ddncodec.priors import Priors


@torch.no_grad()
def tally(
    network: DDN, crops: torch.Tensor, choose: Callable[[torch.Tensor], Chooser], batch: int = 8
) -> list[np.ndarray]:
    """Per layer, the (CONTEXTS, K) counts of the symbols ``choose(target)`` picks on
    ``crops`` (B, 3, H, W), by context class."""
    specs = network.config.layers
    counts = [np.zeros((CONTEXTS, s.k), dtype=np.int64) for s in specs]
    for start in range(0, crops.shape[0], batch):
        target = crops[start : start + batch]
        maps: codec.Grids = []  # per layer, per crop: as the codec's per tile
        for layer, (idx, _) in enumerate(network.walk((target.shape[0], *target.shape[-2:]), choose(target))):
            maps.append(list(idx.numpy().astype(np.int64)))
            parents = codec.layer_parents(network.config, maps, layer, [g.shape for g in maps[layer]])
            for grid, parent in zip(maps[layer], parents, strict=True):
                counts[layer] += count_contexts(grid, parent, specs[layer].k)
    return counts


def count_priors(network: DDN, crops: torch.Tensor, choose: Callable[[torch.Tensor], Chooser]) -> Priors:
    """One table set counted on ``crops`` with ``choose``: the priors of a freshly trained network."""
    return Priors.from_counts(tally(network, crops, choose))


def recount_priors(model: CodecModel, crops: torch.Tensor, rungs: list[Rung], rounds: int = 1) -> Priors:
    """One table set per rung of ``rungs``: the symbols the rate-aware encoder picks on
    ``crops`` at the rung's λ (every layer, so that any layer count can use the set),
    priced with that set's previous tables; ``rounds`` times."""
    priors = model.priors
    for _ in range(rounds):
        current = model.replace(priors=priors)
        sets = [
            tally(
                model.network,
                crops,
                functools.partial(codec.rate_aware, model=current, lam=rung.lam, tables=min(i, priors.sets - 1)),
            )
            for i, rung in enumerate(rungs)
        ]
        priors = Priors.from_counts(np.stack([s[layer] for s in sets]) for layer in range(len(model.config.layers)))
    return priors


@dataclass(frozen=True)
class Point:
    rung: Rung
    bpp: float  # mean over images of whole-file bpp
    psnr: float  # mean over images of PSNR (dB)


def measure(model: CodecModel, images: list[np.ndarray], rung: Rung) -> Point:
    """Mean bpp and PSNR of full encodes of ``images`` ((H, W, 3) uint8) at ``rung``."""
    results = [codec.encode_pixels(pixels, "RGB", model, rung) for pixels in images]
    return Point(rung, float(np.mean([r.bpp for r in results])), float(np.mean([r.psnr for r in results])))


def front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both rate and PSNR, by rising rate."""
    ordered = sorted(points, key=lambda p: (p.bpp, -p.psnr))
    kept: list[Point] = []
    for p in ordered:
        if not kept or p.psnr > kept[-1].psnr:
            kept.append(p)
    return kept


def hull(points: list[Point]) -> list[Point]:
    """The upper concave hull of ``points`` in (linear bpp, PSNR), by rising rate: the
    operational rate-distortion curve, the one mixing two rungs could reach."""
    vertices: list[Point] = []
    for p in front(points):
        while len(vertices) >= 2 and _on_or_under_chord(vertices[-2], vertices[-1], p):
            vertices.pop()
        vertices.append(p)
    return vertices


def _on_or_under_chord(a: Point, b: Point, c: Point) -> bool:
    """Whether ``b`` lies on or under the straight line from ``a`` to ``c`` (a.bpp < c.bpp)."""
    return (b.psnr - a.psnr) * (c.bpp - a.bpp) <= (c.psnr - a.psnr) * (b.bpp - a.bpp)


def gap_under(point: Point, vertices: list[Point]) -> float:
    """How many dB ``point`` lies under the hull ``vertices`` at its rate (0 outside its span)."""
    for a, b in itertools.pairwise(vertices):
        if a.bpp <= point.bpp <= b.bpp and b.bpp > a.bpp:
            on_hull = a.psnr + (b.psnr - a.psnr) * (point.bpp - a.bpp) / (b.bpp - a.bpp)
            return max(0.0, on_hull - point.psnr)
    return 0.0


def pick_rungs(points: list[Point], count: int = len(QUALITIES), span: float = 80.0) -> list[Rung]:
    """``count`` rungs of the front at rates spread evenly in log-bpp over its top
    ``span``-fold range (lower rates look too poor to offer; 32-fold lost the rates under
    0.05 bpp once the model grew to 18 layers, 64-fold once its top rung reached 3.7 bpp
    on the validation crops at 26 layers). Among the points within
    half a step of each target rate, the one least under the operational hull wins, then
    the nearest: a point close in rate but far under the hull (few layers at λ = 0, say)
    would waste the rung; then, at about the same rate and as close to the hull, the one
    that runs the fewest layers (``_fewer_layers``). Rungs rise in rate and PSNR (strictly
    if the front has enough points, else the last ones repeat)."""
    best = front(points)
    vertices = hull(best)
    log_rates = [math.log(p.bpp) for p in best]
    gaps = [round(gap_under(p, vertices), 6) for p in best]
    high = log_rates[-1]
    low = max(log_rates[0], high - math.log(span))
    step = (high - low) / max(count - 1, 1)
    chosen: list[int] = []
    for i in range(count):
        target = low + step * i
        first = min(chosen[-1] + 1, len(best) - 1) if chosen else 0
        last = max(first, len(best) - (count - i))  # leave room for the rungs still to come
        ranked = [(abs(log_rates[j] - target), j) for j in range(first, last + 1)]
        near = [(gaps[j], distance, j) for distance, j in ranked if distance <= step / 2 + 1e-9]
        pick = min(near)[-1] if near else min(ranked)[-1]
        chosen.append(_fewer_layers(best, gaps, pick, range(first, last + 1)))
    return [best[j].rung for j in chosen]


FEWER_LAYERS_DB = 0.05
"""How far under the hull (dB, beyond the picked point's own gap) a rung may move to
run fewer layers: encode and decode time grows with the layer count, and at the same
rate 21 layers at λ = 1000 gave the 26-layer model 1.75x the seconds of 16 layers at
λ = 1000 for no PSNR a viewer could see."""
SAME_RATE = 0.1
"""Points within this much log-bpp (about 10 %) of a pick count as the same rate."""


def _fewer_layers(best: list[Point], gaps: list[float], pick: int, allowed: range) -> int:
    """The point of ``allowed`` at about ``pick``'s rate and within FEWER_LAYERS_DB of its
    gap under the hull that runs the fewest layers (``pick`` itself if none runs fewer)."""
    rate = math.log(best[pick].bpp)
    same = [
        (best[j].rung.layers, gaps[j], j)
        for j in allowed
        if abs(math.log(best[j].bpp) - rate) <= SAME_RATE and gaps[j] <= gaps[pick] + FEWER_LAYERS_DB
    ]
    return min(same)[-1]


LAMBDAS = (0.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
"""The λ values tried at every layer count (squared 8-bit levels per bit). The small
ones matter at the top: all 23 layers at λ = 50 cost about as many bits as 19 layers at
λ = 0 and give 1.5 dB more (validation crops), so the top rungs must not be left to
truncation alone."""


DETAIL_STEPS = (8, 11, 14, 20, 28, 40, 56, 80, 112)
"""Detail steps tried on a few short walks (``detail_bases``): on validation crops of the
26-layer model a 12-layer walk at λ = 3000 plus the detail layer beat every plain rung
above about 0.45 bpp, by 3 dB at 2 bpp."""


def detail_bases(layer_count: int) -> list[tuple[int, float]]:
    """The walks a detail layer is tried on: about 15 %, a quarter, half and 70 % of the
    layers, at λ 3000 and 10⁴. On 16 whole validation photos the 26-layer model's detail
    rungs cost the same bits (within 0.4 %) on a 6-layer walk at λ = 10⁴ as on a 12-layer
    one, for about half the network's time. On 17 with format version 10, 4 layers beat 6
    under steps 100-255 (170: 0.6 % more bytes for +0.06 dB), were about even under 66 and
    lost a little under 20-37; 3 did not beat 4."""
    counts = sorted({max(1, round(layer_count * share)) for share in (0.15, 0.25, 0.45, 0.7)})
    return [(n, lam) for n in counts for lam in (3000.0, 10000.0)]


def default_grid(layer_count: int) -> list[Rung]:
    """Every layer count with every λ of ``LAMBDAS``, and ``detail_bases`` with every ``DETAIL_STEPS``."""
    plain = [Rung(n, lam) for n in range(1, layer_count + 1) for lam in LAMBDAS]
    return plain + [Rung(n, lam, step) for n, lam in detail_bases(layer_count) for step in DETAIL_STEPS]


def tune_ladder(
    model: CodecModel, images: list[np.ndarray], grid: list[Rung] | None = None
) -> tuple[list[Rung], list[Point]]:
    """The ladder for ``model`` on validation ``images``, and every measured point."""
    points = [measure(model, images, rung) for rung in grid or default_grid(len(model.config.layers))]
    return pick_rungs(points), points


def load_images(folders: list[Path], limit: int, size: int) -> list[np.ndarray]:
    """Up to ``limit`` center crops of ``size`` px (whole image if smaller) from ``folders``."""
    images = []
    for path in list_images(folders)[:limit]:
        pixels = load_rgb(path)
        top, left = max(0, (pixels.shape[0] - size) // 2), max(0, (pixels.shape[1] - size) // 2)
        images.append(np.ascontiguousarray(pixels[top : top + size, left : left + size]))
    return images


def finalize(
    model: CodecModel,
    train: list[Path],
    val: list[Path],
    crops: int = TuneOptions.crops,
    crop: int = TuneOptions.crop,
    val_images: int = TuneOptions.val_images,
    val_size: int = TuneOptions.val_size,
) -> CodecModel:
    """Count table sets along a first ladder on training crops, tune the ladder on
    validation images with them, and count the sets of that ladder; the card records
    ladder, its points and the entropy-coding saving. Never give it evaluation data
    (Kodak, McMaster)."""
    train_crops = CropSampler(train, crop, seed=1234).batch(crops)
    images = load_images(val, val_images, val_size)
    grid = default_grid(len(model.config.layers))
    # Table sets for a first ladder (the model's own, if tuned before), the ladder those
    # sets make best, then the table sets of that ladder.
    ladder = model.ladder or tune_ladder(model, images, grid)[0]
    model = with_ladder(model, ladder)
    model = model.replace(priors=recount_priors(model, train_crops, ladder))
    ladder, _ = tune_ladder(model, images, grid)
    model = with_ladder(model, ladder)
    model = model.replace(priors=recount_priors(model, train_crops, ladder))
    card = dict(model.card)
    card["ladder_on_val"] = ladder_on_val(model, images)
    card["priors"] = {
        "counted_on": [str(p) for p in train],
        "crops": crops,
        "crop": crop,
        "chooser": "rate-aware, one table set per rung",
        "ladder_tuned_on": [str(p) for p in val],
        "val_images": len(images),
        "val_size": val_size,
    }
    card["entropy_coding"] = saving(model, images)
    return model.replace(card=card)


def ladder_on_val(model: CodecModel, images: list[np.ndarray]) -> list[dict]:
    """What the card records of each rung on validation ``images``: mean bpp and PSNR
    (the ``--bpp`` search starts from these rates)."""
    return [
        {"quality": q, "bpp": round(p.bpp, 4), "psnr": round(p.psnr, 3)}
        for q, p in enumerate((measure(model, images, r) for r in model.ladder), 1)
    ]


def with_ladder(model: CodecModel, ladder: list[Rung] | tuple[Rung, ...]) -> CodecModel:
    return model.replace(ladder=tuple(ladder))


def saving(model: CodecModel, images: list[np.ndarray]) -> dict:
    """Coded bits per index against fixed-length log2 K, per layer, for the plain nearest
    encoding of every layer of ``images``."""
    fixed = np.zeros(len(model.config.layers))
    coded = np.zeros(len(model.config.layers))
    for pixels in images:
        result = codec.encode_pixels(pixels, "RGB", model, Rung(len(model.config.layers), 0.0))
        parsed = container.unpack(result.data)
        tiles = codec.plan(result.width, result.height, model.config.unit)
        for layer, (spec, stream) in enumerate(zip(model.config.layers, parsed.streams, strict=True)):
            count = sum(h * w for h, w in (codec.cells(t, model, layer) for t in tiles))
            fixed[layer] += count * math.log2(spec.k)
            coded[layer] += 8 * len(stream)
    return {
        "measured_on": f"{len(images)} validation images, nearest choice, all layers",
        "fixed_bits": int(fixed.sum()),
        "coded_bits": int(coded.sum()),
        "saving_percent": round(100 * (1 - coded.sum() / fixed.sum()), 1),
        "saving_percent_per_layer": [round(100 * (1 - c / f), 1) for c, f in zip(coded, fixed, strict=True)],
    }
