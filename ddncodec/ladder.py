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


@dataclass(frozen=True)
class Rung:
    """One quality setting: how many layers to code and the rate weight λ
    (squared 8-bit levels per bit; 0 = nearest candidate)."""

    layers: int
    lam: float


def fallback(layer_count: int) -> tuple[Rung, ...]:
    """A ladder for models that carry none: layers grow with quality, a mild λ below
    the top, the plain nearest choice at the top."""
    top = len(QUALITIES)
    return tuple(Rung(max(1, round(layer_count * q / top)), 0.0 if q == top else 1000.0) for q in QUALITIES)


def validated(rungs: object, layer_count: int) -> tuple[Rung, ...]:
    """Rungs (Rung objects or [layers, λ] pairs) checked against a model of ``layer_count`` layers."""
    try:
        parsed = tuple(r if isinstance(r, Rung) else Rung(int(r[0]), float(r[1])) for r in rungs)  # type: ignore[union-attr]
    except (TypeError, ValueError, IndexError) as exc:
        msg = f"the model's ladder is unreadable ({exc})"
        raise ModelError(msg) from exc
    ok = len(parsed) == len(QUALITIES) and all(1 <= r.layers <= layer_count and r.lam >= 0 for r in parsed)
    if not ok:
        msg = f"the model's ladder needs {len(QUALITIES)} rungs of (1..{layer_count} layers, λ >= 0)"
        raise ModelError(msg)
    return parsed


def to_json(rungs: tuple[Rung, ...]) -> str:
    return json.dumps([[r.layers, r.lam] for r in rungs])


def from_json(text: str, layer_count: int) -> tuple[Rung, ...]:
    try:
        return validated(json.loads(text), layer_count)
    except json.JSONDecodeError as exc:
        msg = f"the model's ladder is unreadable ({exc})"
        raise ModelError(msg) from exc
