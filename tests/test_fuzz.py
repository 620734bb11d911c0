"""The decoder as a parser of untrusted bytes: hypothesis properties of the entropy coder,
the container and ``ddncodec.decode``, and a few-thousand-case run of the decoder fuzz
campaign (``benchmarks/fuzz.py``, whose full run writes benchmarks/results/fuzz.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ddncodec
from ddncodec import container, entropy
from ddncodec.modelfile import CodecModel
from ddncodec.priors import Priors

DATA = Path(__file__).parent / "data"
FUZZ = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz.py"
# s per case: catches a hang. The speed target (fuzz.TIME_LIMIT, 2 s) is checked by the full
# campaign, benchmarks/fuzz.py; here, on a loaded 2-core CI machine, it would be flaky.
CASE_LIMIT = 30.0
SLOW_CASES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddncodec_benchmarks_fuzz", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


fuzz = load_fuzz()


@st.composite
def layer_symbols(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A positive integer table (skewed or flat) and symbols drawn from its alphabet."""
    k = draw(st.integers(2, 64))
    table = draw(st.lists(st.integers(1, 1 << 16), min_size=k, max_size=k))
    symbols = draw(st.lists(st.integers(0, k - 1), max_size=300))
    return np.array(table, dtype=np.int64), np.array(symbols, dtype=np.int32)


@SLOW_CASES
@given(
    layers=st.lists(layer_symbols(), min_size=1, max_size=4),
    fingerprint=st.binary(min_size=4, max_size=4),
    size=st.tuples(st.integers(1, 20_000), st.integers(1, 5_000)),
    mode=st.sampled_from(container.MODES),
)
def test_any_index_sequence_round_trips_through_the_coder_and_the_container(
    layers: list[tuple[np.ndarray, np.ndarray]], fingerprint: bytes, size: tuple[int, int], mode: str
) -> None:
    priors = Priors(table for table, _ in layers)
    streams = [entropy.encode(symbols, priors, i) for i, (_, symbols) in enumerate(layers)]
    header = container.Header(fingerprint, *size, mode, tuple(len(s) for s in streams))
    parsed = container.unpack(container.pack(header, streams))
    assert parsed.header == header and parsed.checked
    for i, (_, symbols) in enumerate(layers):
        assert np.array_equal(entropy.decode(parsed.streams[i], priors, i, symbols.size), symbols)


def decodes_or_refuses(data: bytes, model: CodecModel) -> None:
    """The whole contract for untrusted bytes: an image of the header's size, or a DDNError."""
    try:
        image = ddncodec.decode(data, model=model)
    except ddncodec.DDNError:
        return
    header, _ = container.parse_header(data)
    assert image.size == (header.width, header.height)
    assert image.mode == header.mode


@SLOW_CASES
@given(data=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_ddn_error(tiny_model: CodecModel, data: bytes) -> None:
    decodes_or_refuses(data, tiny_model)


@SLOW_CASES
@given(tail=st.binary(max_size=120))
def test_any_bytes_after_a_valid_start_decode_or_raise_a_ddn_error(tiny_model: CodecModel, tail: bytes) -> None:
    """Past the magic, version and the right fingerprint, so the header parser sees them."""
    start = container.MAGIC + bytes([container.VERSION]) + tiny_model.fingerprint[: container.FINGERPRINT_BYTES]
    decodes_or_refuses(start + tail, tiny_model)


@SLOW_CASES
@given(
    size=st.tuples(st.integers(1, 48), st.integers(1, 48)),
    mode=st.sampled_from(container.MODES),
    streams=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
)
def test_well_formed_files_with_garbage_streams_decode_or_raise_a_ddn_error(
    tiny_model: CodecModel, size: tuple[int, int], mode: str, streams: list[bytes]
) -> None:
    """Right checksums and fingerprint, arbitrary layer streams (even more layers than the
    model has): the entropy decoder and the generator see garbage."""
    fingerprint = tiny_model.fingerprint[: container.FINGERPRINT_BYTES]
    header = container.Header(fingerprint, *size, mode, tuple(len(s) for s in streams))
    decodes_or_refuses(container.pack(header, streams), tiny_model)


@pytest.fixture(scope="module")
def campaign(tiny_model: CodecModel) -> fuzz.Summary:
    seeds = fuzz.seed_files(tiny_model, fuzz.seed_images(DATA), sizes=((16, 16), (48, 32), (32, 48), (40, 24)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fuzz, "TIME_LIMIT", CASE_LIMIT)  # the campaign counts slower cases as defects
        return fuzz.campaign(tiny_model, seeds, cases=3000, seed=0)


def test_fuzz_campaign_finds_no_crash_no_undetected_damage_and_no_hang(campaign: fuzz.Summary) -> None:
    assert campaign.cases == 3000
    assert campaign.defects == [], campaign.defects[:5]
    assert campaign.total("crashed") == campaign.total("undetected") == 0
    assert campaign.slowest[0][0] < CASE_LIMIT, campaign.slowest


def test_fuzz_campaign_bit_flips_and_insertions_are_always_refused(campaign: fuzz.Summary) -> None:
    for kind in ("bit flips", "inserted bytes"):
        counts = campaign.counts[kind]
        assert counts["rejected"] == counts.total() > 300, counts


@pytest.mark.parametrize(
    "refusal",
    [
        "checksum mismatch",
        "wrong magic bytes",
        "unsupported .ddn format version",
        "made with another model",
        "unknown mode",
        "the model has N",
        "over the limit",
        "corrupt layer stream",
        "is truncated",
        "has trailing data",
    ],
)
def test_fuzz_campaign_reaches_every_check_of_the_decoder(campaign: fuzz.Summary, refusal: str) -> None:
    """The mutations (forged ones included) get past the checksums to each later check."""
    assert any(refusal in message for message in campaign.messages), sorted(campaign.messages)[:20]
