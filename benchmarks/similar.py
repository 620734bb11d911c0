"""Near-duplicate search on .ddn files (``ddncodec similar``) against perceptual hashes.

    python benchmarks/similar.py DIR... [--out benchmarks/results/similar.md] [--work DIR] [--model default]

- Every photo of each DIR (the originals) and six near-duplicates of it (JPEG at quality
  50, 10 % brighter, 10 % darker, the centre 90 % scaled back, half size, rotated 3°), and
  four it is not built for (the centre 70 %, rotated 10°, mirrored, rotated 90°), are
  encoded with ddncodec at quality 1, on one thread. ``--work`` keeps the files (and the
  encoder's reconstructions, which are exactly what a decode returns) so that a rerun
  skips the encoding.
- The library is every encoded original, indexed as ``ddncodec index`` does it; each
  variant's .ddn file is a query. Recall@1 and @5: the share of queries whose original
  is ranked first, in the first five (ties broken at random, counted as expected).
- Baselines: pHash and dHash (64 bits each) of the full decoded images, ranked by Hamming
  distance.
- Time: a query (its signature, the index read from disk, the ranking) against an index of
  the library, and against an index of 1,000 records (the library's repeated under other
  names; measured, not extrapolated), in this process and as ``ddncodec similar``
  processes; the signature's cost per library file when indexing.

Run it under ``nice`` on a shared machine; every number is printed and written to the report.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy.fft import dctn

from ddncodec import codec, similar
from ddncodec.data import list_images
from ddncodec.modelfile import CodecModel

QUALITY = 1
TIMED_RECORDS = 1000
TIMED_QUERIES = 20
COMMAND_RUNS = 3


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    return Image.open(buffer).convert("RGB")


def _crop(share: float) -> Callable[[Image.Image], Image.Image]:
    """The centre ``share`` of each side, scaled back to the image's size."""

    def crop(image: Image.Image) -> Image.Image:
        w, h = image.size
        margin = (1 - share) / 2
        box = (round(margin * w), round(margin * h), round((1 - margin) * w), round((1 - margin) * h))
        return image.crop(box).resize(image.size, Image.Resampling.LANCZOS)

    return crop


VARIANTS: dict[str, tuple[str, Callable[[Image.Image], Image.Image]]] = {  # file name: (label, how it is made)
    "jpeg50": ("JPEG q50", _jpeg),
    "brighter": ("+10 % brightness", lambda image: ImageEnhance.Brightness(image).enhance(1.1)),
    "darker": ("-10 % brightness", lambda image: ImageEnhance.Brightness(image).enhance(0.9)),
    "crop90": ("90 % centre crop", _crop(0.9)),
    "half": ("half size", lambda image: image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)),
    "rotated3": ("rotated 3°", lambda image: image.rotate(3, Image.Resampling.BICUBIC)),
}
STRESS = {  # beyond the brief: what the signature is not built for, measured for the README
    "crop70": ("70 % centre crop", _crop(0.7)),
    "rotated10": ("rotated 10°", lambda image: image.rotate(10, Image.Resampling.BICUBIC)),
    "mirrored": ("mirrored", ImageOps.mirror),
    "quarter": ("rotated 90°", lambda image: image.transpose(Image.Transpose.ROTATE_90)),
}
ORIGINAL = "original"


Photo = tuple[Path, dict[str, Path]]
"""A photo's file, and the .ddn files of it and of its variants (``ORIGINAL``, VARIANTS
and STRESS by name)."""

ALL = {**VARIANTS, **STRESS}


def variant(photo: Path, name: str) -> Image.Image:
    with Image.open(photo) as opened:
        original = opened.convert("RGB")
    return original if name == ORIGINAL else ALL[name][1](original)


def encode_all(folders: list[Path], work: Path, model: CodecModel) -> list[Photo]:
    """Every photo's .ddn files, encoded at QUALITY unless ``work`` holds them already,
    each with its reconstruction beside it (``.png``)."""
    photos = []
    for i, folder in enumerate(folders):
        for path in list_images([folder]):
            photos.append((work / f"{i}_{folder.name}" / path.stem, path))
    done = []
    for n, (place, path) in enumerate(photos, 1):
        files = {name: place / f"{name}.ddn" for name in (ORIGINAL, *ALL)}
        todo = [name for name, file in files.items() if not file.with_suffix(".png").exists()]
        if todo:
            place.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            for name in todo:
                encoded = codec.encode(variant(path, name), model, quality=QUALITY, threads=1)
                files[name].write_bytes(encoded.data)
                encoded.image().save(files[name].with_suffix(".png"))  # written last: marks the pair done
            print(f"[{n}/{len(photos)}] {path}: {len(todo)} files in {time.perf_counter() - start:.1f} s", flush=True)
        done.append((path, files))
    return done


# ---------------------------------------------------------------- the baselines


def _gray(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def phash(path: Path) -> np.ndarray:
    """64 bits: the 8 x 8 lowest DCT frequencies of a 32 x 32 gray copy, against their median."""
    low = dctn(_gray(path, (32, 32)), norm="ortho")[:8, :8]
    return (low > np.median(low)).ravel()


def dhash(path: Path) -> np.ndarray:
    """64 bits: whether each pixel of a 9 x 8 gray copy is brighter than its left neighbour."""
    gray = _gray(path, (9, 8))
    return (gray[:, 1:] > gray[:, :-1]).ravel()


def expected_hits(scores: np.ndarray, truth: int, k: int) -> float:
    """The chance that ``truth`` is among the ``k`` highest ``scores``, ties broken at random."""
    better = int((scores > scores[truth]).sum())
    tied = int((scores == scores[truth]).sum()) - 1
    return min(1.0, max(0.0, (k - better) / (tied + 1)))


Ranker = Callable[[int, str], np.ndarray]  # (photo, variant name) -> a score per library photo


def recalls(ranker: Ranker, count: int, names: list[str]) -> dict[str, tuple[float, float]]:
    """Per variant, recall@1 and recall@5 of ``ranker`` over the ``count`` photos."""
    out = {}
    for name in names:
        ranked = [ranker(i, name) for i in range(count)]
        out[name] = tuple(float(np.mean([expected_hits(s, i, k) for i, s in enumerate(ranked)])) for k in (1, 5))
    return out


# ---------------------------------------------------------------- timing


def time_search(index: Path, query: Path, model: CodecModel) -> tuple[float, float]:
    """Mean seconds of a query's signature, and of the search proper (the index read,
    each file's size and time checked, the ranking), over TIMED_QUERIES runs."""
    start = time.perf_counter()
    for _ in range(TIMED_QUERIES):
        signature = similar.of_query(query, model, {})
    middle = time.perf_counter()
    for _ in range(TIMED_QUERIES):
        known = similar.load_index(index)
        library = similar.survey([Path(p) for p in known], model, known, print)
        similar.rank(signature, library, 10)
    end = time.perf_counter()
    return (middle - start) / TIMED_QUERIES, (end - middle) / TIMED_QUERIES


def command_seconds(query: Path, index: Path, model: str) -> float:
    """Mean wall seconds of COMMAND_RUNS ``ddncodec similar QUERY --index INDEX`` processes,
    start-up (and the model's loading, if the query needs it) included."""
    start = time.perf_counter()
    for _ in range(COMMAND_RUNS):
        command = [sys.executable, "-m", "ddncodec", "similar", str(query), "--index", str(index), "--model", model]
        subprocess.run(command, check=True, capture_output=True)
    return (time.perf_counter() - start) / COMMAND_RUNS


def padded_index(records: list[similar.Record], folder: Path) -> Path:
    """An index of TIMED_RECORDS records: the library's, repeated under other names (links
    in ``folder`` to the library's files)."""
    padded = []
    for n in range(TIMED_RECORDS):
        record = records[n % len(records)]
        link = folder / f"{n:04d}.ddn"
        link.symlink_to(record.path)
        padded.append(similar.Record(str(link.absolute()), record.size, record.mtime, record.signature))
    index = folder / "padded.idx"
    similar.save_index(index, padded)
    return index


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/similar.md"))
    parser.add_argument("--work", type=Path, help="Keep the encoded files here (default: a temporary folder).")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    model = codec.load_model(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        photos = encode_all(args.folders, args.work or Path(scratch) / "files", model)
        results = measure(photos, model, args.model, Path(scratch))
    text = report(args, results, len(photos))
    args.out.write_text(text)
    print(text, f"wrote {args.out}", sep="\n")


def measure(photos: list[Photo], model: CodecModel, model_name: str, scratch: Path) -> dict[str, object]:
    count, names = len(photos), [*VARIANTS, *STRESS]
    originals = [files[ORIGINAL] for _, files in photos]
    start = time.perf_counter()
    library = similar.survey(originals, model, {}, print)
    index = scratch / "library.idx"
    similar.save_index(index, library.records)
    index_s = time.perf_counter() - start
    assert len(library.records) == count, "every original must be indexed"
    signatures = library.signatures
    ddn = {(i, name): similar.of_query(files[name], model, {}) for i, (_, files) in enumerate(photos) for name in names}
    ours = recalls(lambda i, name: similar.scores(ddn[i, name], signatures), count, names)
    images = recalls(
        lambda i, name: similar.scores(similar.of_image(variant(photos[i][0], name)), signatures), count, names
    )
    baselines = {}
    for label, hashing in (("pHash", phash), ("dHash", dhash)):
        stored = np.stack([hashing(path.with_suffix(".png")) for path in originals])
        baselines[label] = recalls(
            lambda i, name, h=hashing, s=stored: -(s != h(photos[i][1][name].with_suffix(".png"))).sum(1), count, names
        )
    query = photos[0][1][next(iter(VARIANTS))]
    timing = {"library": time_search(index, query, model)}
    (scratch / "padded").mkdir()
    padded = padded_index(library.records, scratch / "padded")
    timing["padded"] = time_search(padded, query, model)
    commands = {"an image": photos[0][0], "a .ddn file": query}
    timing["command"] = {kind: command_seconds(path, padded, model_name) for kind, path in commands.items()}
    sizes = [path.stat().st_size for path in originals]
    return {
        "recall": {"ddncodec similar (.ddn queries)": ours, "ddncodec similar (image queries)": images, **baselines},
        "index_s": index_s,
        "bytes_read": library.bytes_read / library.read,
        "file_bytes": float(np.mean(sizes)),
        "timing": timing,
    }


def _mean(table: dict[str, tuple[float, float]], names: list[str], k: int) -> float:
    return float(np.mean([table[name][k] for name in names]))


def report(args: argparse.Namespace, results: dict[str, object], count: int) -> str:
    recall, timing = results["recall"], results["timing"]
    library_signature, library_search = timing["library"]
    padded_search = timing["padded"][1]
    per_file = (padded_search - library_search) / (TIMED_RECORDS - count)
    lines = [
        "# Near-duplicate search on .ddn files",
        "",
        f"{count} photos of {', '.join(f'`{f}`' for f in args.folders)}, each encoded with ddncodec at quality "
        f"{QUALITY} (model `{args.model}`) with its variants; the library is the {count} encoded originals, each "
        "variant's .ddn file a query (image queries: the variant image itself, never encoded). "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; {platform.platform()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end. Written by `benchmarks/similar.py`.",
        "",
        f"Signature: the {similar.SIDE}x{similar.SIDE} RGB thumbnail of the coarse image the first "
        f"{similar.SIGNATURE_LAYERS} layers decode to (no post-filter), less its mean, at unit length; the score "
        "is the correlation of two, the query's turned the best of eight ways (quarter turns, each also mirrored). pHash and dHash: 64 bits each of the full decoded images, ranked by Hamming "
        "distance; ties broken at random (counted as expected).",
        "",
        "## Recall (the variants of the brief)",
        "",
        "| method | recall@1 | recall@5 | " + " | ".join(f"@1 {VARIANTS[n][0]}" for n in VARIANTS) + " |",
        "|---|---|---|" + "---|" * len(VARIANTS),
        *(
            f"| {method} | {_mean(table, [*VARIANTS], 0):.3f} | {_mean(table, [*VARIANTS], 1):.3f} | "
            + " | ".join(f"{table[n][0]:.3f}" for n in VARIANTS)
            + " |"
            for method, table in recall.items()
        ),
        "",
        "## Beyond the brief: what the signatures are not built for (recall@1 / recall@5)",
        "",
        "| method | " + " | ".join(STRESS[n][0] for n in STRESS) + " |",
        "|---|" + "---|" * len(STRESS),
        *(
            f"| {method} | " + " | ".join(f"{table[n][0]:.3f} / {table[n][1]:.3f}" for n in STRESS) + " |"
            for method, table in recall.items()
        ),
        "",
        "## Cost",
        "",
        f"- Bytes read per library file: {results['bytes_read']:,.0f} on average, of {results['file_bytes']:,.0f} "
        f"({results['bytes_read'] / results['file_bytes']:.0%}): the header and the first "
        f"{similar.SIGNATURE_LAYERS} layers' streams.",
        f"- Indexing: {results['index_s']:.2f} s for {count} files, {1000 * results['index_s'] / count:.0f} ms a file "
        "(read the prefix, walk its layers, thumbnail; model loaded).",
        f"- A query's signature: {1000 * library_signature:.0f} ms (a .ddn query: its prefix read and walked).",
        f"- The search proper (the index read, every file's size and time checked, the ranking), a mean of "
        f"{TIMED_QUERIES} runs: {1000 * library_search:.1f} ms against the {count}-file index, "
        f"{1000 * padded_search:.1f} ms against a {TIMED_RECORDS:,}-record index (measured: the library's records "
        f"repeated under other names), {1e6 * per_file:.1f} µs a file between the two.",
        f"- A query against {TIMED_RECORDS:,} indexed files: {library_signature + padded_search:.3f} s in all, the "
        "model loaded.",
        "- The command line, `ddncodec similar QUERY --index INDEX` against the 1,000-record index, start-up "
        f"included (a mean of {COMMAND_RUNS} processes): "
        + ", ".join(f"{seconds:.2f} s for {kind}" for kind, seconds in timing["command"].items())
        + " (a .ddn query not in the index loads torch and the model to walk its layers; an image query, or a "
        "query the index holds, needs neither).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
