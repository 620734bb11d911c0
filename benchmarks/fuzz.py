"""Fuzz the .ddn decoder with damaged copies of real encoded files.

    python benchmarks/fuzz.py [IMAGES_DIR] [--model default] [--cases 100000] [--seed 0]
                              [--out benchmarks/results/fuzz.md]

A decoder parses untrusted bytes: every case must end in an image or a ``DDNError``,
within 2 s and without a runaway allocation, and a damaged file must be refused
wherever a checksum covers the damage. Seed files are crops of the images in
IMAGES_DIR (default: the test fixtures in tests/data), some gray, encoded at several
qualities. Each case applies one mutation to a seed file and calls ``ddncodec.decode``.

Mutations: a cut at any length, bit flips, overwritten bytes, inserted bytes, a deleted
span, a header field set to an edge value (checksums left alone), a *damaged prefix* (the
file cut after a layer's CRC, then bits flipped in what is kept), 2-4 of the raw kinds
stacked, and two *forged* kinds that recompute every checksum after the damage (a header
field, or garbage in the layer streams), so the checks behind the checksums are reached
too.

Outcomes of a case:
  rejected     a DDNError: the clean refusal
  intact       decoded, and the bytes are the seed file itself or a prefix of it cut
               after a layer's CRC (progressive decoding, by design)
  forged       decoded a forged file (its checksums are right by construction; what
               counts is that it decodes or is refused cleanly, quickly)
  undetected   decoded any other damage: a defect. Format version 2 puts a CRC-32 of
               every byte before it after each layer stream, so a prefix is as fully
               covered as the whole file (version 1 had one trailer CRC, and a damaged
               prefix decoded unseen)
  crashed      any other exception: a defect

The CI test (tests/test_fuzz.py) runs a few thousand cases of this same campaign with
the tiny test model.
"""

from __future__ import annotations

import argparse
import binascii
import itertools
import os
import platform
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import ddncodec
from ddncodec import codec, container
from ddncodec.data import IMAGE_SUFFIXES
from ddncodec.errors import DDNError
from ddncodec.modelfile import CodecModel

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = ("rejected", "intact", "forged", "undetected", "crashed")
TIME_LIMIT = 2.0  # s: the slowest case allowed
SLOWEST_KEPT = 5  # cases listed in the report
DETAIL_STEP = 12  # of the seed files with a detail stream, for models whose ladder has none
SIZES = ((128, 128), (96, 64), (128, 96), (65, 127))  # crop (width, height) per seed image, in turn
QUALITIES = (1, 5, 8)
VARINT_EDGES = (0, 1, 127, 128, 16383, 16384, 10**6, 2**35 - 1)  # lengths and sizes a header may claim
Mutation = Callable[[bytes, np.random.Generator], bytes]


# ---------------------------------------------------------------- seed files


def seed_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def seed_files(model: CodecModel, images: list[Path], sizes: tuple[tuple[int, int], ...] = SIZES) -> list[bytes]:
    """Every image cropped (top-left) to the next size in turn, odd ones gray, at each of
    QUALITIES (and with a detail stream, if no rung has one)."""
    seeds = []
    top = codec.ladder(model)[-1]
    for i, path in enumerate(images):
        width, height = sizes[i % len(sizes)]
        with Image.open(path) as image:
            crop = image.convert("L" if i % 2 else "RGB").crop((0, 0, width, height))
        seeds += [codec.encode(crop, model, quality).data for quality in QUALITIES]
        if not top.detail:  # the model's ladder has no detail rung: code one, so the fuzz reaches that stream too
            seeds.append(codec.encode(crop, model.replace(ladder=[[top.layers, top.lam, DETAIL_STEP]] * 8), 8).data)
    return seeds


# ---------------------------------------------------------------- file anatomy


@dataclass(frozen=True)
class Anatomy:
    """Byte spans (start, end) of a well-formed file's fields and streams, found
    without validating."""

    fields: dict[str, tuple[int, int]]
    crc_at: int  # where the header CRC starts
    streams: tuple[tuple[int, int], ...]  # each layer stream, then the detail stream if any; CRCs not included
    layers: int  # how many of ``streams`` are layer streams

    @classmethod
    def of(cls, data: bytes) -> Anatomy:
        def varint_end(pos: int) -> int:
            while data[pos] & 0x80:
                pos += 1
            return pos + 1

        fields = {"version": (3, 4), "fingerprint": (4, 4 + container.FINGERPRINT_BYTES)}
        pos = fields["fingerprint"][1]
        for name in ("width", "height"):
            fields[name] = (pos, varint_end(pos))
            pos = fields[name][1]
        for offset, name in enumerate(("mode", "table set", "layer count")):
            fields[name] = (pos + offset, pos + offset + 1)
        pos += 3
        lengths = []
        for i in range(data[pos - 1]):
            fields[f"length {i}"] = (pos, varint_end(pos))
            lengths.append(container._read_varint(data, pos, "length")[0])
            pos = fields[f"length {i}"][1]
        layers = len(lengths)
        corrected = data[3] in container._CORRECTED_VERSIONS  # flags say what follows
        if data[3] != container.VERSION and (not corrected or data[fields["mode"][0]] & 0x40):  # a detail stream
            fields["detail step"] = (pos, pos + 1)
            fields["detail length"] = (pos + 1, varint_end(pos + 1))
            lengths.append(container._read_varint(data, pos + 1, "length")[0])
            pos = fields["detail length"][1]
        for name, flag in (("walk colour", 0x08), ("colour", 0x10)):  # versions 10 and 11's corrections, as flagged
            if corrected and data[fields["mode"][0]] & flag:
                fields[name] = (pos, pos + container.COLOUR_BYTES)
                pos += container.COLOUR_BYTES
        crc_at = pos
        fields["header crc"] = (pos, pos + 2)
        pos += 2
        streams = []
        for i, length in enumerate(lengths):
            streams.append((pos, pos + length))
            pos += length
            fields[f"layer {i} crc" if i < layers else "detail crc"] = (pos, pos + container.LAYER_CRC_BYTES)
            pos += container.LAYER_CRC_BYTES
        return cls(fields, crc_at, tuple(streams), layers)

    def streams_of(self, data: bytes) -> list[bytes]:
        return [data[start:end] for start, end in self.streams]


def _forge(head: bytes, streams: list[bytes]) -> bytes:
    """A file with every checksum right: ``head`` (the header without its CRC), its
    CRC, then each stream followed by the CRC-32 of all bytes before it. The streams need
    not match the lengths ``head`` claims."""
    out = bytearray(head + struct.pack(">H", binascii.crc_hqx(head, 0)))
    for stream in streams:
        out += stream
        out += struct.pack(">I", zlib.crc32(out))
    return bytes(out)


def _field_value(data: bytes, name: str, span: tuple[int, int], rng: np.random.Generator) -> bytes:
    """New bytes for a field: an edge value, a neighbour of the current one, or random."""
    old = data[span[0] : span[1]]
    if name in ("fingerprint", "colour", "walk colour") or name.endswith("crc"):
        return rng.bytes(len(old))
    if name in ("version", "mode", "table set", "layer count", "detail step"):
        return bytes([int(rng.choice([0, 1, 2, 255, (old[0] + 1) % 256, (old[0] - 1) % 256]))])
    current, _ = container._read_varint(data, span[0], name)
    value = int(rng.choice([*VARINT_EDGES, current + 1, max(current - 1, 0), 2 * current, current // 2]))
    return container._varint(value)


def _forge_layer_count(data: bytes, anatomy: Anatomy, rng: np.random.Generator) -> bytes:
    """A well-formed file of n layers instead of L: fewer drop the finest streams, more add
    random ones (n = 0 and n above the model's count are refused, the rest decode)."""
    streams = anatomy.streams_of(data)[: anatomy.layers]
    n = int(rng.choice([0, 1, max(len(streams) - 1, 0), len(streams) + 1, len(streams) + 4, 255]))
    streams = streams[:n] + [rng.bytes(int(rng.integers(20))) for _ in range(n - len(streams))]
    at = anatomy.fields["layer count"][0]
    head = data[:at] + bytes([n]) + b"".join(container._varint(len(s)) for s in streams)
    return _forge(head, streams)


def _edit_field(data: bytes, rng: np.random.Generator, forge: bool) -> bytes:
    anatomy = Anatomy.of(data)
    names = [n for n in anatomy.fields if not (forge and n.endswith("crc"))]
    name = names[int(rng.integers(len(names)))]
    if forge and name == "layer count":
        return _forge_layer_count(data, anatomy, rng)
    start, end = anatomy.fields[name]
    value = _field_value(data, name, (start, end), rng)
    if not forge:
        return data[:start] + value + data[end:]
    # The edited header with every checksum right, around the original streams.
    head = data[:start] + value + data[end : anatomy.crc_at]
    return _forge(head, anatomy.streams_of(data))


# ---------------------------------------------------------------- mutations


def cut(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data)))]


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    """1-8 distinct bits, so the file always changes."""
    out = bytearray(data)
    for bit in rng.choice(8 * len(data), min(int(rng.integers(1, 9)), 8 * len(data)), replace=False):
        out[bit // 8] ^= 1 << int(bit % 8)
    return bytes(out)


def overwrite(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for pos in rng.integers(0, len(data), int(rng.integers(1, 5))):
        out[pos] = int(rng.integers(256))
    return bytes(out)


def insert(data: bytes, rng: np.random.Generator) -> bytes:
    pos = int(rng.integers(len(data) + 1))
    return data[:pos] + rng.bytes(int(rng.integers(1, 17))) + data[pos:]


def delete(data: bytes, rng: np.random.Generator) -> bytes:
    pos = int(rng.integers(len(data)))
    return data[:pos] + data[pos + int(rng.integers(1, 17)) :]


def header_field(data: bytes, rng: np.random.Generator) -> bytes:
    return _edit_field(data, rng, forge=False)


def damaged_prefix(data: bytes, rng: np.random.Generator) -> bytes:
    """The file cut after a random layer's CRC, then 1-8 bits flipped in what is kept
    (in its layer streams and CRCs two times in three, else anywhere): what format
    version 1 could not see. A file with no layer (version 7) has no prefix: bits flipped anywhere."""
    anatomy = Anatomy.of(data)
    if not anatomy.layers:
        return flip_bits(data, rng)
    kept = int(rng.integers(1, anatomy.layers + 1))
    prefix = data[: anatomy.fields[f"layer {kept - 1} crc"][1]]
    start = anatomy.streams[0][0] if rng.random() < 2 / 3 else 0
    out = bytearray(prefix)
    bits = rng.choice(8 * (len(prefix) - start), min(int(rng.integers(1, 9)), 8 * (len(prefix) - start)), replace=False)
    for bit in bits:
        out[start + bit // 8] ^= 1 << int(bit % 8)
    return bytes(out)


RAW: dict[str, Mutation] = {
    "cut": cut,
    "bit flips": flip_bits,
    "overwritten bytes": overwrite,
    "inserted bytes": insert,
    "deleted span": delete,
    "header field": header_field,
    "damaged prefix": damaged_prefix,
}


STACKABLE = (cut, flip_bits, overwrite, insert, delete)  # not the field edit or prefix: they need a well-formed file


def stacked(data: bytes, rng: np.random.Generator) -> bytes:
    for _ in range(int(rng.integers(2, 5))):
        if not data:
            break
        data = STACKABLE[int(rng.integers(len(STACKABLE)))](data, rng)
    return data


def forged_field(data: bytes, rng: np.random.Generator) -> bytes:
    return _edit_field(data, rng, forge=True)


def forged_streams(data: bytes, rng: np.random.Generator) -> bytes:
    """Bytes overwritten in the layer streams (the file's own lengths), every CRC recomputed."""
    anatomy = Anatomy.of(data)
    streams = anatomy.streams_of(data)
    payload = b"".join(streams)
    if payload:
        payload = overwrite(payload, rng)
    pieces, pos = [], 0
    for s in streams:
        pieces.append(payload[pos : pos + len(s)])
        pos += len(s)
    return _forge(data[: anatomy.crc_at], pieces)


MUTATIONS: dict[str, Mutation] = {
    **RAW,
    "stacked": stacked,
    "forged field": forged_field,
    "forged streams": forged_streams,
}
FORGED = {"forged field", "forged streams"}


# ---------------------------------------------------------------- the campaign


def layer_prefixes(data: bytes) -> set[bytes]:
    """The file and every prefix of it cut after a layer's CRC: what may decode."""
    header, start = container.parse_header(data)
    ends = itertools.accumulate(length + container.LAYER_CRC_BYTES for length in header.lengths)
    return {data} | {data[: start + end] for end in ends}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


@dataclass
class Summary:
    counts: dict[str, Counter] = field(default_factory=dict)  # mutation -> outcome -> cases
    messages: Counter = field(default_factory=Counter)  # rejection messages, numbers masked
    defects: list[tuple[str, str, bytes]] = field(default_factory=list)  # (mutation, what happened, input)
    seconds: list[float] = field(default_factory=list)
    slowest: list[tuple[float, str, str, str]] = field(default_factory=list)  # (seconds, mutation, outcome, detail)
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    wall_s: float = 0.0

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())


def _mask(message: str) -> str:
    """A rejection message with its numbers and hex masked, to count kinds of refusal."""
    words = [("N" if any(ch.isdigit() for ch in w) else w) for w in message.split()]
    return " ".join(words)[:90]


def classify(data: bytes, mutated: bytes, forged: bool, model: CodecModel) -> tuple[str, str]:
    """(outcome, detail) of decoding ``mutated``, a damaged copy of ``data``."""
    try:
        image = ddncodec.decode(mutated, model=model)
    except DDNError as exc:
        return "rejected", str(exc)
    except Exception as exc:  # every other exception is the defect being hunted
        return "crashed", f"{type(exc).__name__}: {exc}"
    decoded = f"to {image.width}x{image.height} px from {len(mutated)} bytes"
    if mutated in layer_prefixes(data):
        return "intact", decoded
    if forged:
        return "forged", decoded
    return "undetected", f"{decoded}: damage a checksum covers"


def campaign(model: CodecModel, seeds: list[bytes], cases: int, seed: int = 0, progress: bool = False) -> Summary:
    """Run ``cases`` mutations, cycling through MUTATIONS, each on a random seed file."""
    rng = np.random.default_rng(seed)
    kinds = list(MUTATIONS)
    summary = Summary(counts={kind: Counter() for kind in kinds})
    ddncodec.decode(seeds[0], model=model)  # warm up: first-call costs are not a case's
    summary.rss_before_mib = peak_rss_mib()
    start = time.perf_counter()
    for i in tqdm(range(cases), disable=not progress, unit="case", mininterval=2.0, file=sys.stderr):
        kind = kinds[i % len(kinds)]
        data = seeds[int(rng.integers(len(seeds)))]
        mutated = MUTATIONS[kind](data, rng)
        t0 = time.perf_counter()
        outcome, detail = classify(data, mutated, kind in FORGED, model)
        seconds = time.perf_counter() - t0
        summary.counts[kind][outcome] += 1
        summary.seconds.append(seconds)
        if len(summary.slowest) < SLOWEST_KEPT or seconds > summary.slowest[-1][0]:
            summary.slowest = sorted([*summary.slowest, (seconds, kind, outcome, detail)], reverse=True)[:SLOWEST_KEPT]
        if outcome == "rejected":
            summary.messages[_mask(detail)] += 1
        elif outcome in ("undetected", "crashed") or seconds > TIME_LIMIT:
            summary.defects.append((kind, f"{outcome} in {seconds:.2f} s {detail}", mutated))
    summary.wall_s = time.perf_counter() - start
    summary.rss_peak_mib = peak_rss_mib()
    return summary


# ---------------------------------------------------------------- report


def report(summary: Summary, model_name: str, model: CodecModel, seeds: list[bytes], command: str) -> str:
    seconds = np.array(summary.seconds)
    lines = [
        "# Decoder fuzz campaign",
        "",
        f"`{command}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} "
        "(the codec runs the network on one thread).",
        "",
        f"Model `{model_name}` (fingerprint {model.fingerprint[:4].hex()}, {len(model.config.layers)} layers, "
        f"unit {model.config.unit} px). {len(seeds)} seed files of {min(map(len, seeds))}–{max(map(len, seeds))} bytes "
        "(the mutations and outcomes are defined in `benchmarks/fuzz.py`).",
        "",
        f"| mutation | cases | {' | '.join(OUTCOMES)} |",
        f"|---|---:|{'---:|' * len(OUTCOMES)}",
    ]
    for kind, counts in summary.counts.items():
        lines.append(f"| {kind} | {sum(counts.values()):,} | {' | '.join(f'{counts[o]:,}' for o in OUTCOMES)} |")
    totals = " | ".join(f"**{summary.total(o):,}**" for o in OUTCOMES)
    lines += [
        f"| **all** | **{summary.cases:,}** | {totals} |",
        "",
        f"- Cases: {summary.cases:,} in {summary.wall_s:.0f} s ({summary.cases / summary.wall_s:,.0f} cases/s).",
        f"- Rejected cleanly (a `DDNError`): {summary.total('rejected'):,}; decoded: "
        f"{sum(summary.total(o) for o in ('intact', 'forged', 'undetected')):,}; "
        f"crashed: {summary.total('crashed')}; damage a checksum covers, decoded: {summary.total('undetected')}.",
        f"- Time per case: median {np.median(seconds) * 1e3:.2f} ms, 99.9th percentile "
        f"{np.quantile(seconds, 0.999) * 1e3:.1f} ms, slowest {summary.slowest[0][0]:.3f} s; "
        f"over {TIME_LIMIT:g} s: {int((seconds > TIME_LIMIT).sum())}. The slowest cases:",
        *(f"  - {t:.3f} s, {kind}, {outcome} {detail[:90]}" for t, kind, outcome, detail in summary.slowest),
        f"- Peak memory (process RSS): {summary.rss_peak_mib:,.0f} MiB, of which {summary.rss_before_mib:,.0f} MiB "
        "before the first case (Python, torch, the model, the seed files).",
        "",
        "Most frequent refusals (numbers masked as N):",
        "",
        "| cases | message |",
        "|---:|---|",
        *(f"| {n:,} | {message} |" for message, n in summary.messages.most_common(12)),
    ]
    if summary.defects:
        lines += ["", "Defects (first 20):", ""]
        lines += [f"- {kind}: {what} — input `{data[:48].hex()}`…" for kind, what, data in summary.defects[:20]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=Path, default=ROOT / "tests" / "data", help="folder of seed images")
    parser.add_argument("--model", default="default", help="model name or path")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    args = parser.parse_args()
    images = seed_images(args.images)
    if not images:
        parser.error(f"{args.images}: no images")
    try:
        model = ddncodec.load_model(args.model)
    except DDNError as exc:
        parser.error(str(exc))
    seeds = seed_files(model, images)
    summary = campaign(model, seeds, args.cases, args.seed, progress=True)
    command = " ".join(["python benchmarks/fuzz.py", *sys.argv[1:]])
    text = report(summary, args.model, model, seeds, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    sys.exit(1 if summary.defects else 0)


if __name__ == "__main__":
    main()
