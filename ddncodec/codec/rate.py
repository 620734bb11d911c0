"""Rate control: the file nearest a target of bits per pixel (``--bpp``).

Above the plain rungs, one walk and a search along the detail layer's quantiser step;
below, a search over the ladder's rungs, then along λ at one layer count. The walks
skip the post-filter (it changes no byte but a flag); only the file kept is filtered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ddncodec import colour
from ddncodec.codec import encoder
from ddncodec.codec.encoder import Coded, Encoded
from ddncodec.codec.models import ladder, table_set
from ddncodec.ladder import MAX_DETAIL_STEP, Rung
from ddncodec.modelfile import CodecModel

BPP_TOLERANCE = 0.04  # the --bpp search stops this close to the target (relative)
SEARCH_WALKS = 8  # the --bpp search keeps the closest file after this many walks
LAMBDA_FLOOR = 10.0  # the search steps in log(λ + LAMBDA_FLOOR): λ under ~10 is as good as 0
RATE_SLOPE = 0.5  # the search's first guess of -d log bpp / d log(λ + LAMBDA_FLOOR)
STEP_LIMIT = 4.0  # the search's largest step outside a bracket, in log(λ + LAMBDA_FLOOR)
BRACKET_WIDTH = 0.02  # a bracket this narrow in log(λ + LAMBDA_FLOOR) ends the search
LAMBDA_MIN, LAMBDA_MAX = 1.0, 1e7  # below: as good as 0; above: every cell takes its cheapest symbol
DEEPER = 2
"""A target past λ = 0 of every plain rung (and under the detail layer's coarsest step) is
searched along λ on a walk this many times the deepest plain rung's layers (up to the
layers allowed): on model version 13, whose q2 is the detail layer, kodim05's coarsest
detail file takes 0.125 bpp and q1's 6 layers at λ = 0 reach 0.065; version 12's plain
12-layer q2 covered those rates."""
DETAIL_SLOPE = 0.85
"""-d log bpp / d log step of the detail layer, the search's first guess: the default model's
detail rungs on the validation crops when it was set (0.44 bpp at step 100 to 3.64 bpp at
step 8). Measured again with format version 8: 0.88 over the same steps, 0.96 from q3's 170."""

Walk = tuple[Rung, int, float]  # a walk's rung, table set and bpp


def reached(encoded: Encoded, bpp: float) -> bool:
    """Whether a ``bpp`` search landed within its tolerance (else it kept the closest file)."""
    return reached_bpp(encoded.bpp, bpp)


def reached_bpp(bpp: float, target: float) -> bool:
    return abs(bpp / target - 1) <= BPP_TOLERANCE


def _validation_rates(model: CodecModel) -> list[float]:
    """The bpp of each ladder rung on the validation crops (the card's ``ladder_on_val``)."""
    return [p["bpp"] for p in model.card.get("ladder_on_val", [])]


def search_bpp(
    pixels: np.ndarray, mode: str, model: CodecModel, target: float, max_layers: int, effort: int
) -> Encoded:
    """The file nearest ``target`` bpp, within BPP_TOLERANCE if it can be had.

    A target above the rate of the plain rung below the ladder's first detail rung is
    searched along that rung's detail step (``search_detail``: one walk); below that, or
    where even the coarsest step overshoots, among the plain rungs (``_PlainSearch``)."""
    full = ladder(model)
    on_val = _validation_rates(model)
    if len(on_val) != len(full):
        on_val = [2.0**i for i in range(len(full))]  # no measured rates: about a bisection
    first = next((i for i, r in enumerate(full) if r.detail and r.layers <= max_layers), None)
    if first is not None and target >= (on_val[first - 1] if first else 0.0):  # above the plain rungs below it
        found = search_detail(pixels, mode, model, full[first], target, effort)
        if reached(found, target) or found.bpp < target:  # else the target is under what detail costs
            return found
    # A ladder of detail rungs alone: the first one's walk, plain, is the plain search's rung.
    plain = [i for i, r in enumerate(full) if not r.detail] or [first or 0]
    rungs = [Rung(min(full[i].layers, max_layers), full[i].lam) for i in plain]
    rates = [on_val[i] for i in plain]
    unique = [i for i in range(len(rungs)) if rungs[i] not in rungs[:i]]  # a ladder may repeat a rung
    deepest = max(rungs, key=lambda r: r.layers)
    deeper = Rung(min(DEEPER * deepest.layers, max_layers), deepest.lam)
    search = _PlainSearch(
        pixels,
        mode,
        model,
        target,
        effort,
        [rungs[i] for i in unique],
        [rates[i] for i in unique],
        deeper if deeper.layers > deepest.layers else None,
    )
    return search.run()


@dataclass
class _PlainSearch:
    """The plain rungs' search. First the ladder's rungs: each guess is the rung whose
    validation rate, scaled by what this image has measured so far, is nearest, until
    the target lies between two walked rungs, or is predicted within reach of λ from a
    walked one (``family``, or a rung nearer the target than the next rung is predicted:
    ``beyond``); then a secant search in λ along that layer count (``along_lambda``; and
    along the other rung's, if that cannot reach it)."""

    pixels: np.ndarray
    mode: str
    model: CodecModel
    target: float
    effort: int
    rungs: list[Rung]
    on_val: list[float]
    deeper: Rung | None = None  # walked along λ where every walk of the rungs falls short (``DEEPER``)
    tried: list[Walk] = field(default_factory=list)
    best: Coded | None = None  # the walk nearest the target so far

    def run(self) -> Encoded:
        start, fallback = self._ladder_walks()
        if not self._over:
            self._lambda_walks(start, fallback)
        if self.deeper is not None and not self._over and all(bpp < self.target for *_, bpp in self.tried):
            tables = table_set(self.model, self.deeper)
            if not self.attempt(self.deeper, tables):
                along_lambda(self.deeper.layers, tables, None, self.target, self.tried, self.attempt)
        assert self.best is not None
        return encoder.finish(self.best, self.pixels, self.mode, self.model)

    @property
    def _over(self) -> bool:
        """Whether the last walk ended the search (close enough, or out of walks)."""
        return bool(self.tried) and (reached_bpp(self.tried[-1][2], self.target) or len(self.tried) >= SEARCH_WALKS)

    def attempt(self, rung: Rung, tables: int) -> bool:
        """Walk at ``rung``; whether the search is over."""
        coded = encoder.code(self.pixels, self.model, rung, tables, self.effort)
        height, width = self.pixels.shape[:2]
        likely = colour.BYTES if self.mode == "RGB" else 0  # the finished file's colour correction, most often there
        bpp = 8 * (len(coded.data(self.model, self.mode, False)) + likely) / (width * height)
        if not self.tried or abs(math.log(bpp / self.target)) < min(
            abs(math.log(b / self.target)) for *_, b in self.tried
        ):
            self.best = coded
        self.tried.append((rung, tables, bpp))
        return self._over

    def family(self, i: int, bpp: float, scale: float) -> int | None:
        """The rung λ alone can reach from ``i`` towards the target: of ``i``'s layer count,
        the nearest predicted past the target, else the last such one (the family's end,
        if it is the ladder's)."""
        rungs, step = self.rungs, 1 if bpp < self.target else -1
        j = i
        while 0 <= j + step < len(rungs) and rungs[j + step].layers == rungs[i].layers:
            j += step
            if (self.on_val[j] * scale - self.target) * step >= 0:
                return j
        return j if j != i and not 0 <= j + step < len(rungs) else None

    def beyond(self, i: int, bpp: float, scale: float) -> int | None:
        """The rung next to walked rung ``i`` towards the target, if the target lies
        between ``i``'s rate and that rung's predicted one and nearer ``i`` (in log
        rate): then λ most likely moves ``i`` there, and walking that rung only to
        bracket the target would be a wasted walk. It is walked only if λ cannot."""
        j = i + (1 if bpp < self.target else -1)
        if not 0 <= j < len(self.rungs):
            return None
        predicted = self.on_val[j] * scale
        between = (predicted - self.target) * (bpp - self.target) < 0
        return j if between and abs(math.log(bpp / self.target)) < abs(math.log(predicted / self.target)) else None

    def _ladder_walks(self) -> tuple[int | None, int | None]:
        """Walk the ladder's rungs until λ can take over: the walked rung it starts from
        (None: the target was bracketed or reached) and the rung ``beyond`` it."""
        low, high, scale = 0, len(self.rungs) - 1, 1.0
        while low <= high:
            guess = min(range(low, high + 1), key=lambda i: abs(math.log(self.on_val[i] * scale / self.target)))
            if self.attempt(self.rungs[guess], table_set(self.model, self.rungs[guess])):
                return None, None
            bpp = self.tried[-1][2]
            scale = bpp / self.on_val[guess]
            low, high = (guess + 1, high) if bpp < self.target else (low, guess - 1)
            fallback = self.beyond(guess, bpp, scale)
            if self.family(guess, bpp, scale) is not None or fallback is not None:
                return guess, fallback
        return None, None

    def _lambda_walks(self, start: int | None, fallback: int | None) -> None:
        """Along λ from ``start``, then from the walked rungs either side of the target,
        then from ``fallback`` (walked only now that λ from start fell short)."""
        rates = {r: b for r, _, b in self.tried}
        walked = [i for i in range(len(self.rungs)) if self.rungs[i] in rates]
        above = min(
            (i for i in walked if rates[self.rungs[i]] >= self.target), key=lambda i: rates[self.rungs[i]], default=None
        )
        below = max(
            (i for i in walked if rates[self.rungs[i]] < self.target), key=lambda i: rates[self.rungs[i]], default=None
        )
        for side in dict.fromkeys(i for i in (start, above, below, fallback) if i is not None):
            rung = self.rungs[side]
            if rung not in rates:
                if self.attempt(rung, table_set(self.model, rung)):
                    return
                rates[rung] = self.tried[-1][2]
            bpp = rates[rung]
            j = self.family(side, bpp, bpp / self.on_val[side])  # its predicted rate guides the first step
            guide = None if j is None else (self.rungs[j].lam, self.on_val[j] * bpp / self.on_val[side])
            if along_lambda(rung.layers, table_set(self.model, rung), guide, self.target, self.tried, self.attempt):
                return


def search_detail(pixels: np.ndarray, mode: str, model: CodecModel, base: Rung, target: float, effort: int) -> Encoded:
    """The detail step that brings one walk of ``base`` nearest ``target`` bpp, re-coding the
    detail layer alone: secant steps on (log step, log bpp) inside a bracket that shrinks
    like a bisection's (the rate falls as the step grows), from the ladder's detail rung
    nearest the target (``first_step``). A bisection took ~8 codings of the detail layer,
    each about 1 s on a Kodak image once the walk was 6 layers."""
    coded = encoder.code(pixels, model, base, None, effort)
    decoded, filtered = encoder.post_filter_choice(coded, pixels, mode, model)
    decoded, walk_correction = encoder.corrected_walk(coded, pixels, mode, decoded)  # once, for every step tried
    files: dict[int, Encoded] = {}
    fine, coarse = 0, MAX_DETAIL_STEP + 1  # steps known to give more, and less, than the target
    step = first_step(model, target)
    while True:
        files[step] = found = encoder.file(coded, pixels, mode, model, decoded, filtered, step, walk_correction)
        if reached(found, target):
            break
        fine, coarse = (fine, step) if found.bpp < target else (step, coarse)
        if coarse - fine <= 1:
            break
        step = next_step(files, target, fine, coarse)
    return min(files.values(), key=lambda e: abs(math.log(e.bpp / target)))


def first_step(model: CodecModel, target: float) -> int:
    """The step the card's validation rates predict for ``target``: from the detail rung
    whose rate there is nearest, along DETAIL_SLOPE (the middle step without rates)."""
    on_val = _validation_rates(model)
    rungs = ladder(model)
    known = [(bpp, r.detail) for bpp, r in zip(on_val, rungs, strict=False) if r.detail and bpp > 0]
    if len(on_val) != len(rungs) or not known:
        return (1 + MAX_DETAIL_STEP) // 2
    bpp, step = min(known, key=lambda k: abs(math.log(k[0] / target)))
    return min(max(round(step * (bpp / target) ** (1 / DETAIL_SLOPE)), 1), MAX_DETAIL_STEP)


def next_step(files: dict[int, Encoded], target: float, fine: int, coarse: int) -> int:
    """A secant step on (log step, log bpp) through the two codings nearest the target in
    rate (one coding: along DETAIL_SLOPE), kept inside the middle 80 % of (fine, coarse)."""
    near = sorted(files, key=lambda s: abs(math.log(files[s].bpp / target)))[:2]
    if len(near) == 2 and files[near[0]].bpp != files[near[1]].bpp:
        (s0, s1), (r0, r1) = near, (math.log(files[near[0]].bpp), math.log(files[near[1]].bpp))
        slope = (math.log(s1) - math.log(s0)) / (r1 - r0)
        guess = math.exp(math.log(s0) + slope * (math.log(target) - r0))
    else:
        guess = near[0] * (files[near[0]].bpp / target) ** (1 / DETAIL_SLOPE)
    width = coarse - fine
    low, high = fine + max(1, 0.1 * width), coarse - max(1, 0.1 * width)
    return int(min(max(round(guess), math.ceil(low)), math.floor(high))) if low <= high else (fine + coarse) // 2


Point = tuple[float, float]  # (log(λ + LAMBDA_FLOOR), log bpp) of a walk


def _inside_bracket(fat: Point, thin: Point, goal: float) -> float | None:
    """A secant step between the nearest walks either side of the target, kept in the
    bracket's middle 80 % (it shrinks even where the curve bends); None once it is narrow."""
    (u0, r0), (u1, r1) = fat, thin
    if u1 - u0 < BRACKET_WIDTH:
        return None
    u = u0 + (r0 - goal) * (u1 - u0) / (r0 - r1)
    return min(max(u, u0 + 0.1 * (u1 - u0)), u1 - 0.1 * (u1 - u0))


def _outside_bracket(near: list[Point], too_fat: bool, guide: tuple[float, float] | None, goal: float) -> float:
    """Extrapolate from the nearest walk (last in ``near``) through the one before it, or
    the ``guide`` (λ, predicted bpp), else along RATE_SLOPE, by at most STEP_LIMIT."""
    if len(near) == 1 and guide is not None:
        near = [(math.log(guide[0] + LAMBDA_FLOOR), math.log(guide[1])), *near]
    u_near, r_near = near[-1]
    slope = RATE_SLOPE  # -d log bpp / d log(λ + LAMBDA_FLOOR)
    if len(near) == 2 and near[0][0] != u_near and (near[0][1] - r_near) * (near[0][0] - u_near) < 0:
        slope = -(near[0][1] - r_near) / (near[0][0] - u_near)
    step = min((r_near - goal) / slope if too_fat else (goal - r_near) / slope, STEP_LIMIT)
    return u_near + step if too_fat else u_near - step


def along_lambda(
    layers: int,
    tables: int,
    guide: tuple[float, float] | None,
    target: float,
    tried: list[Walk],
    attempt: Callable[[Rung, int], bool],
) -> bool:
    """Secant steps on (log(λ + LAMBDA_FLOOR), log bpp) at ``layers`` layers, from the walks
    already made there, with table set ``tables`` held (where the set would change with
    λ the rate jumps); whether the search is over."""
    goal = math.log(target)
    while True:
        points = sorted(
            (math.log(r.lam + LAMBDA_FLOOR), math.log(b)) for r, t, b in tried if (r.layers, t) == (layers, tables)
        )
        fat = [p for p in points if p[1] > goal]  # rates above the target: raise λ
        thin = [p for p in points if p[1] <= goal]
        if fat and thin:
            u = _inside_bracket(fat[-1], thin[0], goal)
            if u is None:
                return False
        else:
            u = _outside_bracket(fat[-2:] if fat else thin[:2][::-1], bool(fat), guide, goal)  # the nearest walk last
        lam = math.exp(u) - LAMBDA_FLOOR
        if lam < LAMBDA_MIN:  # as good as λ = 0, which is as many bits as there are
            lam = 0.0
            if (Rung(layers, 0.0), tables) in ((r, t) for r, t, _ in tried):
                return False
        elif lam > LAMBDA_MAX:
            return False
        if attempt(Rung(layers, lam), tables):
            return True
