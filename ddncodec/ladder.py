"""The quality ladder: what each ``--quality`` means for a model, as (layers, λ) rungs.

Tuned on validation photos by ``tune`` and stored in the model file under its own
metadata key, validated when the model loads (a bad ladder is the model's fault, not
the input's). Encoding only: the decoder never needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ddncodec.errors import ModelError

QUALITIES = range(1, 9)


MAX_DETAIL_STEP = 255  # the .ddn header stores the detail step in one byte
MAX_LAMBDA = 1e12  # far past 1e7, where every cell already takes its cheapest symbol; rate · λ stays finite


@dataclass(frozen=True)
class Rung:
    """One quality setting: how many layers to code, the rate weight λ (squared 8-bit
    levels per bit; 0 = nearest candidate) and the quantiser step of the detail layer
    coded on top (``detail``; 0 = none)."""

    layers: int
    lam: float
    detail: int = 0


def fallback(layer_count: int) -> tuple[Rung, ...]:
    """A ladder for models that carry none: layers grow with quality, a mild λ below
    the top, the plain nearest choice at the top."""
    top = len(QUALITIES)
    return tuple(Rung(max(1, round(layer_count * q / top)), 0.0 if q == top else 1000.0) for q in QUALITIES)


def validated(rungs: object, layer_count: int) -> tuple[Rung, ...]:
    """Rungs (Rung objects or [layers, λ] pairs) checked against a model of ``layer_count`` layers."""
    try:
        parsed = tuple(r if isinstance(r, Rung) else _from_list(r) for r in rungs)  # type: ignore[union-attr]
    except (TypeError, ValueError, IndexError, OverflowError, RecursionError) as exc:
        msg = f"the model's ladder is unreadable ({exc})"
        raise ModelError(msg) from exc
    ok = len(parsed) == len(QUALITIES) and all(
        1 <= r.layers <= layer_count and 0 <= r.lam <= MAX_LAMBDA and 0 <= r.detail <= MAX_DETAIL_STEP for r in parsed
    )
    if not ok:
        msg = (
            f"the model's ladder needs {len(QUALITIES)} rungs of (1..{layer_count} layers, λ 0..{MAX_LAMBDA:g}"
            f"[, detail step 0..{MAX_DETAIL_STEP}])"
        )
        raise ModelError(msg)
    return parsed


def _from_list(values: list) -> Rung:
    """[layers, λ] or [layers, λ, detail step]."""
    if len(values) not in (2, 3):
        msg = f"a rung is [layers, λ] or [layers, λ, detail step], got {values!r}"
        raise ValueError(msg)
    detail = int(values[2]) if len(values) == 3 else 0
    if len(values) == 3 and detail != values[2]:
        msg = f"a detail step is a whole number, got {values[2]!r}"
        raise ValueError(msg)
    if int(values[0]) != values[0]:
        msg = f"a rung's layer count is a whole number, got {values[0]!r}"
        raise ValueError(msg)
    return Rung(int(values[0]), float(values[1]), detail)


def to_json(rungs: tuple[Rung, ...]) -> str:
    return json.dumps([[r.layers, r.lam, *([r.detail] if r.detail else [])] for r in rungs])


def from_json(text: str, layer_count: int) -> tuple[Rung, ...]:
    try:
        return validated(json.loads(text), layer_count)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = f"the model's ladder is unreadable ({exc})"
        raise ModelError(msg) from exc
