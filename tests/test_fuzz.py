"""The decoder as a parser of untrusted bytes: hypothesis properties of the entropy coder,
the container and ``ddncodec.decode``, and a few-thousand-case run of the decoder fuzz
campaign (``benchmarks/fuzz.py``, whose full run writes benchmarks/results/fuzz.md)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ddncodec
from ddncodec import container, entropy
from ddncodec.context import CONTEXTS, parent_grid
from ddncodec.modelfile import CodecModel

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
def index_maps(draw: st.DrawFn) -> tuple[list[int], list[list[np.ndarray]], list[np.ndarray]]:
    """1-4 layers of halving cells over a few tiles: per layer its alphabet size (2..64),
    its index maps (one grid per tile, keep-heavy or not) and a positive initial table."""
    count = draw(st.integers(1, 4))
    unit = 2 ** (count - 1)
    tiles = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ks, maps, tables = [], [], []
    for layer in range(count):
        k = draw(st.integers(2, 64))
        keep = draw(st.floats(0.0, 0.95))
        p = (1 - keep) * rng.dirichlet(np.full(k, draw(st.sampled_from([0.1, 1.0, 10.0]))))
        p[0] += keep
        cell = 2 ** (count - 1 - layer)
        maps.append([rng.choice(k, (h * unit // cell, w * unit // cell), p=p / p.sum()) for h, w in tiles])
        ks.append(k)
        tables.append(rng.integers(1, draw(st.sampled_from([2, 3000, 60000])), (CONTEXTS, k)))
    return ks, maps, tables


def parents_of(previous: list[np.ndarray] | None, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The co-located symbols of the layer before (cells halve from layer to layer)."""
    if previous is None:
        return [parent_grid(None, 0, 1, shape) for shape in shapes]
    return [parent_grid(p, 2, 1, shape) for p, shape in zip(previous, shapes, strict=True)]


@SLOW_CASES
@given(
    layers=index_maps(),
    fingerprint=st.binary(min_size=4, max_size=4),
    size=st.tuples(st.integers(1, 20_000), st.integers(1, 5_000)),
    mode=st.sampled_from(container.MODES),
    table_set=st.integers(0, 255),
    data=st.data(),
)
def test_any_index_maps_round_trip_through_the_coder_and_the_container(
    layers: tuple[list[int], list[list[np.ndarray]], list[np.ndarray]],
    fingerprint: bytes,
    size: tuple[int, int],
    mode: str,
    table_set: int,
    data: st.DataObject,
) -> None:
    """Encoded layer by layer with the layer before as parent, packed, unpacked (whole
    or cut after any layer), then decoded with the *decoded* layer before as parent."""
    _, maps, tables = layers
    shapes = [[g.shape for g in grids] for grids in maps]
    streams = [
        entropy.encode(maps[i], parents_of(maps[i - 1] if i else None, shapes[i]), tables[i]) for i in range(len(maps))
    ]
    header = container.Header(fingerprint, *size, mode, table_set, tuple(len(s) for s in streams))
    packed = container.pack(header, streams)
    kept = data.draw(st.integers(1, len(maps)), label="layers kept")
    cut = len(packed) - sum(len(s) + container.LAYER_CRC_BYTES for s in streams[kept:])
    parsed = container.unpack(packed[:cut])
    assert parsed.header == header
    assert parsed.complete == (kept == len(maps))
    decoded: list[list[np.ndarray]] = []
    for i, stream in enumerate(parsed.streams):
        parents = parents_of(decoded[i - 1] if i else None, shapes[i])
        decoded.append(entropy.decode(stream, shapes[i], parents, tables[i]))
        assert all(np.array_equal(d, m) for d, m in zip(decoded[i], maps[i], strict=True)), i
    assert len(decoded) == kept


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
    table_set=st.sampled_from([0, 0, 0, 1, 255]),
    streams=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
)
def test_well_formed_files_with_garbage_streams_decode_or_raise_a_ddn_error(
    tiny_model: CodecModel, size: tuple[int, int], mode: str, table_set: int, streams: list[bytes]
) -> None:
    """Right checksums and fingerprint, arbitrary layer streams (even more layers than the
    model has, or a table set it lacks): the entropy decoder and the generator see garbage."""
    fingerprint = tiny_model.fingerprint[: container.FINGERPRINT_BYTES]
    header = container.Header(fingerprint, *size, mode, table_set, tuple(len(s) for s in streams))
    decodes_or_refuses(container.pack(header, streams), tiny_model)


@pytest.fixture(scope="module")
def campaign(tiny_model: CodecModel) -> fuzz.Summary:
    seeds = fuzz.seed_files(tiny_model, fuzz.seed_images(DATA), sizes=((16, 16), (48, 32), (32, 48), (40, 24)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fuzz, "TIME_LIMIT", CASE_LIMIT)  # the campaign counts slower cases as defects
        return fuzz.campaign(tiny_model, seeds, cases=3000, seed=0)


@pytest.mark.slow
def test_fuzz_campaign_finds_no_crash_no_undetected_damage_and_no_hang(campaign: fuzz.Summary) -> None:
    assert campaign.cases == 3000
    assert set(campaign.counts) == set(fuzz.MUTATIONS)
    assert campaign.defects == [], campaign.defects[:5]
    assert campaign.total("crashed") == campaign.total("undetected") == 0
    assert campaign.slowest[0][0] < CASE_LIMIT, campaign.slowest
    assert campaign.total("intact") > 0  # cuts after a layer's CRC decode, by design
    assert campaign.total("forged") > 0  # forged files get past the checksums and decode


@pytest.mark.slow
def test_fuzz_campaign_bit_flips_insertions_and_damaged_prefixes_are_always_refused(campaign: fuzz.Summary) -> None:
    """A damaged prefix decoded unseen in format version 1; every kept layer carries its CRC now."""
    for kind in ("bit flips", "inserted bytes", "damaged prefix"):
        counts = campaign.counts[kind]
        assert counts["rejected"] == counts.total() > 250, (kind, counts)
    prefix_refusals = [m for m in campaign.messages if "checksum mismatch in layer" in m]
    assert prefix_refusals, sorted(campaign.messages)[:20]


@pytest.mark.slow
@pytest.mark.parametrize(
    "refusal",
    [
        "checksum mismatch in layer",
        "header (checksum mismatch)",
        "wrong magic bytes",
        "unsupported .ddn format version",
        "made with another model",
        "unknown mode",
        "N layers, the model has N",
        "table set N the model has N",  # masked: "set 1," -> "set N"
        "over the limit",
        "corrupt layer stream",
        "corrupt detail stream",
        "checksum mismatch in the detail stream",
        "more information than its N bytes hold",
        "is truncated",
        "has trailing data",
    ],
)
def test_fuzz_campaign_reaches_every_check_of_the_decoder(campaign: fuzz.Summary, refusal: str) -> None:
    """The mutations (forged ones included) get past the checksums to each later check."""
    assert any(refusal in message for message in campaign.messages), sorted(campaign.messages)[:30]


def test_forging_rebuilds_a_seed_file_byte_for_byte(tiny_model: CodecModel) -> None:
    """The anatomy finds every field and stream, and ``_forge`` of a seed's own header and
    streams is the seed itself: forged cases differ from a seed only where they were edited."""
    seeds = fuzz.seed_files(tiny_model, fuzz.seed_images(DATA)[:4], sizes=((48, 32), (40, 24)))
    for data in seeds:
        anatomy = fuzz.Anatomy.of(data)
        streams = anatomy.streams_of(data)
        parsed = container.unpack(data)
        assert tuple(streams) == (*parsed.streams, *([parsed.detail] if parsed.detail is not None else []))
        assert fuzz._forge(data[: anatomy.crc_at], streams) == data
        spans = sorted([*anatomy.fields.values(), *anatomy.streams])
        assert spans[0][0] == len(container.MAGIC)  # the version byte follows the magic
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gaps, no overlaps
        assert spans[-1][1] == len(data)
        assert len(fuzz.layer_prefixes(data)) == len(streams)  # each layer cut, and the whole file
