"""Batch jobs over many files: the codec's commands run on this machine's cores (engine
``local``, forked processes) or on a Ray cluster (engine ``ray``, one actor per worker),
and photo libraries coded folder to folder with a manifest that makes a rerun resume.

Every engine codes through one ``Coder`` (one model per worker, loaded once, one torch
thread) and hands the bytes back to the driver, which alone writes outputs (atomically)
and the manifest: so the bytes are the same on any engine and worker count, and Ray
workers on other machines need neither the photos nor the output folder.

    ddncodec.batch.encode_tree("photos/", "library/", engine="ray", quality=4)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING, Any

from ddncodec import reading
from ddncodec.atomic import write_atomically
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import DDNError, InputError, OptionError

if TYPE_CHECKING:
    from ddncodec.codec import Progress
    from ddncodec.modelfile import CodecModel

ENGINES = ("local", "ray")
PNG_OPTIONS = {"compress_level": 1}
"""zlib's fastest level for decoded PNGs: a 24-megapixel photo took 6.9 s to write at Pillow's default
level 6 (a quarter of its decode) and takes 1.4 s, for 11 % more bytes."""
MANIFEST = "ddncodec-manifest.jsonl"


@dataclass(frozen=True)
class Settings:
    """How every file of a batch is coded (it travels to the workers)."""

    command: str  # "encode" or "decode"
    quality: int | None = None
    bpp: float | None = None
    layers: int | None = None
    effort: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # per file (None: every core of the worker's machine); never changes a byte

    @property
    def suffix(self) -> str:
        """The suffix of the files a command writes into a folder."""
        return ".ddn" if self.command == "encode" else ".png"

    def options(self, fingerprint: bytes) -> dict[str, Any]:
        """What decides an output's bytes, recorded with it so that a rerun with other
        options (or another model) never takes an old output for a finished one."""
        coding = {"quality": self.quality, "bpp": self.bpp, "effort": self.effort} if self.command == "encode" else {}
        return {"command": self.command, **coding, "layers": self.layers, "model": fingerprint.hex()}


@dataclass(frozen=True)
class Item:
    """One file to code: a path (or its bytes, read by the driver for a remote worker),
    its name in messages, its output's name in the summary line, the format decode writes."""

    source: Path | bytes
    name: str
    target: str
    fmt: str = "PNG"


@dataclass
class Coded:
    """One coded file, as a worker hands it back."""

    data: bytes
    lines: list[str]  # the summary lines a command prints for it
    bpp: float  # of the .ddn file
    psnr: float | None  # of the encoder's reconstruction; None for decode
    seconds: float = 0.0  # spent coding, on the worker


Failure = tuple[int, str]  # the exit code and the one-line message of a file that failed
Outcome = Coded | Failure


class Coder:
    """What coding one file means for a command, with a model loaded once per worker. The
    CLI, the local pool and every Ray actor code through it, so they agree to the byte
    and print the same lines."""

    def __init__(self, settings: Settings, model: CodecModel) -> None:
        self.settings = settings
        self.model = model

    def __call__(self, item: Item, progress: Progress | None = None) -> Coded:
        """Code one file, reporting its tiles to ``progress``."""
        start = time.perf_counter()
        code = self._encode if self.settings.command == "encode" else self._decode
        coded = code(item, progress)
        coded.seconds = time.perf_counter() - start
        return coded

    def _encode(self, item: Item, progress: Progress | None) -> Coded:
        from ddncodec import codec

        s = self.settings
        result = codec.encode(
            reading.input_bytes(item.source, s.max_pixels),
            self.model,
            s.quality,
            bpp=s.bpp,
            layers=s.layers,
            effort=s.effort,
            max_pixels=s.max_pixels,
            threads=s.threads,
            progress=progress,
        )
        lines = [
            f"{item.name} {result.width}x{result.height} -> {item.target}: {len(result.data):,} B, "
            f"{result.bpp:.4f} bpp, {result.psnr:.2f} dB ({result.rung.layers} layers, λ {result.rung.lam:g}"
            f"{f', detail step {result.rung.detail}' if result.rung.detail else ''})"
        ]
        if result.frames > 1:
            lines.append(f"{item.name}: coded frame 1 of {result.frames} (a .ddn file holds one still image)")
        if s.bpp is not None and not codec.reached(result, s.bpp):
            lines.append(
                f"{item.name}: --bpp {s.bpp:g} is out of reach for this image; the closest is {result.bpp:.4f} bpp"
            )
        return Coded(result.data, lines, result.bpp, result.psnr)

    def _decode(self, item: Item, progress: Progress | None) -> Coded:
        from ddncodec import codec, container, imageio

        s = self.settings
        data = reading.input_bytes(item.source, s.max_pixels)
        header, _ = container.parse_header(data, s.max_pixels)
        imageio.check_fits(header.width, header.height, item.fmt)
        image = codec.decode(data, self.model, s.layers, max_pixels=s.max_pixels, threads=s.threads, progress=progress)
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=item.fmt, **PNG_OPTIONS if item.fmt == "PNG" else {})
        except Exception as exc:  # a writer's own limits or bugs: one line, and the batch goes on
            msg = f"cannot write {item.fmt} ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        lines = [f"{item.name} -> {item.target}: {image.width}x{image.height} {image.mode}"]
        return Coded(buffer.getvalue(), lines, 8 * len(data) / (header.width * header.height), None)


def _failure(exc: BaseException) -> Failure:
    """The command line's one rule for an error a file caused: its exit code and line."""
    from ddncodec.cli import exit_code, message  # not at the top: the command line imports this module

    return exit_code(exc), message(exc)


def _attempt(coder: Coder, item: Item, progress: Progress | None = None) -> Outcome:
    """The coded file, or the failure it caused."""
    try:
        return coder(item, progress)
    except (DDNError, OSError) as exc:
        return _failure(exc)


class _TileBar:
    """A photo's own progress bar on stderr (tiles and pieces done, time left), shown once
    the photo has taken two seconds: small images never flash one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=self.name, unit="tile", delay=2, file=sys.stderr, leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- engines

_pool_job: tuple[Coder, list[Item]] | None = None  # the running batch, inherited by forked workers


def _in_worker(i: int) -> tuple[int, Outcome]:
    assert _pool_job is not None  # set before the pool forks
    coder, items = _pool_job
    return i, _attempt(coder, items[i])


def _local(coder: Coder, items: list[Item], jobs: int, shown: bool) -> Iterator[tuple[int, Outcome]]:
    """Each item's outcome, in input order: in this process (on every core unless the
    settings say otherwise, each photo with its own progress bar if ``shown``), or in
    ``jobs`` forked workers that inherit the loaded model and share the cores (the bytes
    are the same either way)."""
    global _pool_job
    if jobs < 2 or len(items) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for i, item in enumerate(items):
            bar = _TileBar(item.name) if shown else None
            try:
                yield i, _attempt(coder, item, bar)
            finally:
                if bar is not None:
                    bar.close()
        return
    workers = min(jobs, len(items))
    threads = coder.settings.threads or max(1, (os.cpu_count() or 1) // workers)
    _pool_job = Coder(replace(coder.settings, threads=threads), coder.model), items
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield from pool.imap(_in_worker, range(len(items)))
    except BaseException:  # an error, or the batch given up (GeneratorExit)
        pool.terminate()
        raise
    else:
        pool.close()  # the workers end on their own: a SIGTERM would make Ray's handlers, if loaded, dump stacks
    finally:
        pool.join()
        _pool_job = None


class _Worker:
    """A Ray actor: one model, received once, coding on one torch thread."""

    def __init__(self, settings: Settings, model: CodecModel) -> None:
        import torch

        torch.set_num_threads(1)
        self.coder = Coder(settings, model)

    def code(self, item: Item) -> Outcome:
        return _attempt(self.coder, item)


def _import_ray() -> Any:
    """Ray, or a one-line error (exit 1) saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        msg = "--engine ray needs Ray, which is not installed: pip install 'ddncodec[ray]'"
        raise OptionError(msg) from exc
    return ray


def _ray(coder: Coder, items: list[Item], workers: int | None, address: str | None) -> Iterator[tuple[int, Outcome]]:
    """Each item's outcome as it arrives from ``workers`` Ray actors (default: one per CPU
    of the cluster; each reserves one). Joins the cluster at ``address`` ("auto": the one
    ``ray start`` runs here), or the Ray this process already runs, or starts one here for
    the batch. The driver reads each file and
    ships its bytes, so the workers need neither the photos nor the output folder."""
    ray = _import_ray()
    if not items:
        return
    started = not ray.is_initialized()
    if started:
        # more workers than cores here: as asked, a Ray with that many CPUs (else some would never start)
        local = address is None and workers is not None and workers > (os.cpu_count() or 1)
        try:
            ray.init(
                address=address or "local",  # not a cluster found by chance ("auto" finds the one here)
                num_cpus=workers if local else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,  # Ray's notices would bury the batch's own lines
            )
        except (ValueError, ConnectionError, RuntimeError) as exc:
            msg = f"cannot {'join Ray at ' + address if address else 'start Ray'}: {_first_line(exc)}"
            raise OptionError(msg) from exc
    actors: list[Any] = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers is None:
            workers = max(cpus, 1)
        elif workers > cpus:  # the actors beyond the CPUs would never start, and the batch would wait forever
            msg = f"--workers {workers}: the Ray cluster has {cpus} CPUs"
            raise OptionError(msg)
        worker = ray.remote(num_cpus=1)(_Worker)
        model = ray.put(coder.model)

        settings = replace(coder.settings, threads=coder.settings.threads or 1)  # one core per actor

        def spawn() -> Any:
            return worker.remote(settings, model)

        actors += [spawn() for _ in range(min(workers, len(items)))]
        yield from _dispatch(ray, actors, spawn, items, coder.settings.max_pixels)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    """Ray's errors run to many lines (tracebacks); a batch's messages are one."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _dispatch(
    ray: Any, actors: list[Any], spawn: Callable[[], Any], items: list[Item], max_pixels: int
) -> Iterator[tuple[int, Outcome]]:
    """Keep every actor busy with one file at a time (none waits behind a file that may
    kill its worker), reading each on the driver as it is sent. When an actor dies (out of
    memory, a lost node), a fresh one takes its place and the file gets one more try."""
    free = list(range(len(actors)))
    pending: dict[Any, tuple[int, int, Any]] = {}  # a call -> its item, its actor's slot, that actor
    queue = deque(range(len(items)))
    retried: set[int] = set()
    while True:
        while free and queue:
            i = queue.popleft()
            try:
                shipped = replace(items[i], source=reading.input_bytes(items[i].source, max_pixels))
            except (DDNError, OSError) as exc:
                yield i, _failure(exc)
                continue
            k = free.pop()
            pending[actors[k].code.remote(shipped)] = i, k, actors[k]
        if not pending:
            return
        [done], _ = ray.wait(list(pending), num_returns=1)
        i, k, actor = pending.pop(done)
        free.append(k)
        try:
            outcome = ray.get(done)
        except ray.exceptions.RayError as exc:
            lost = isinstance(exc, ray.exceptions.RayActorError)
            if lost and actors[k] is actor:
                actors[k] = spawn()
            if lost and i not in retried:
                retried.add(i)
                queue.appendleft(i)
                continue
            outcome = (
                1,
                f"{'Ray worker lost' if lost else 'Ray task failed'} ({type(exc).__name__}: {_first_line(exc)})",
            )
        yield i, outcome


# ---------------------------------------------------------------- the driver


@dataclass
class Summary:
    """What a batch did."""

    total: int
    coded: int = 0
    skipped: int = 0  # finished by an earlier run (a tree's manifest vouches for them)
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # input, exit code, one-line message
    seconds: float = 0.0
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        """0, or the worst failure's code (the CLI's one rule)."""
        return max((code for _, code, _ in self.failed), default=0)


def run(
    coder: Coder,
    items: list[Item],
    finish: Callable[[int, Coded], None],
    *,
    failed: Callable[[int, str], None] | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    quiet: bool = False,
    sizes: Sequence[int] | None = None,
    skipped: int = 0,
) -> Summary:
    """Code ``items`` on ``engine`` and ``finish(i, coded)`` each on the driver as it
    arrives (writing it; an error there fails that file alone). A failed file gets one
    line naming it on stderr (and ``failed(i, line)``), the batch goes on. A progress bar
    (files, MB/s of ``sizes``, ETA) on a terminal unless ``quiet``; the summary lines too."""
    from tqdm import tqdm

    if engine not in ENGINES:
        msg = f"engine must be one of {', '.join(ENGINES)}, got {engine!r}"
        raise OptionError(msg)
    if engine == "local" and address is not None:
        msg = "--address is for --engine ray"
        raise OptionError(msg)
    summary = Summary(total=len(items) + skipped, skipped=skipped)
    start = time.perf_counter()
    shown = not quiet and sys.stderr.isatty()
    if engine == "ray":
        results = _ray(coder, items, workers, address)
    else:
        results = _local(coder, items, workers or os.cpu_count() or 1, shown)
    shown = shown and summary.total > 1
    bar = tqdm(total=summary.total, initial=skipped, disable=not shown, unit="file", file=sys.stderr, leave=False)
    done_bytes = 0
    with bar, contextlib.closing(results):
        for i, outcome in results:
            item = items[i]
            if isinstance(outcome, Coded):
                try:
                    finish(i, outcome)
                except (DDNError, OSError) as exc:  # writing fails that file alone too
                    outcome = _failure(exc)
            if isinstance(outcome, Coded):
                summary.coded += 1
                for line in [] if quiet else outcome.lines:
                    bar.write(line, file=sys.stderr)
            else:
                code, text = outcome
                named = text if text.startswith(item.name) else f"{item.name}: {text}"
                summary.failed.append((item.name, code, named))
                if failed is not None:
                    failed(i, named)
                bar.write(f"ddncodec: error: {named}", file=sys.stderr)
            done_bytes += sizes[i] if sizes else 0
            bar.set_postfix_str(f"{done_bytes / 1e6 / (time.perf_counter() - start):.2f} MB/s", refresh=False)
            bar.update(1)
    summary.seconds = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------- trees and their manifest


def _kinds(command: str) -> set[str]:
    """The suffixes a folder's files are picked by: images for encode, .ddn for decode."""
    if command == "decode":
        return {".ddn"}
    from PIL import Image

    return set(Image.registered_extensions()) - {".ddn"}


def _walk(folder: Path, kinds: set[str]) -> Iterator[Path]:
    """A folder's files of ``kinds``, recursively and sorted; hidden names (temporary files,
    the manifest) are left out, and symlinked folders are not followed (no loops)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in kinds:
                yield Path(root) / name


def _listed(listing: Path) -> Iterator[tuple[Path, PurePath]]:
    """An ``@list.txt``'s entries, one path a line (blank and # lines skipped), relative
    to the list's folder; each keeps its place under it in the output, else its name."""
    base = listing.parent
    for line in listing.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = base / entry  # an absolute entry stays as it is
        relative = os.path.relpath(os.path.normpath(path), os.path.normpath(base))
        outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
        yield path, PurePath(Path(entry).name if outside else relative)


def collect(sources: Sequence[str | os.PathLike], command: str) -> list[tuple[Path, PurePath]]:
    """Every input of a tree with its place in the output folder: a file by its name, a
    folder's files (images for encode, .ddn for decode) by their path inside it, an
    ``@list.txt``'s entries (files or folders) by their path relative to the list. A name
    that is neither file nor folder is kept, to fail as that file alone."""
    kinds = _kinds(command)
    places: list[tuple[Path, PurePath]] = []
    for source in sources:
        text = os.fspath(source)
        if text == "-":
            msg = "a batch to a folder reads files, not stdin (-)"
            raise OptionError(msg)
        named = list(_listed(Path(text[1:]))) if text.startswith("@") else [(Path(text), PurePath(Path(text).name))]
        for path, place in named:
            if path.is_dir():  # a folder argument's files go straight under the output folder
                inside = place if text.startswith("@") else PurePath()
                places += [(file, inside / file.relative_to(path)) for file in _walk(path, kinds)]
            else:
                places.append((path, place))
    return places


class Manifest:
    """``OUTDIR/ddncodec-manifest.jsonl``: one JSON line per input coded or failed,
    appended and flushed as results arrive. An output counts as finished when it exists
    with the size its last record gives and was made with the same options; the record
    is written before the output's atomic rename, so a kill at any instant leaves either
    a finished output or one the next run redoes, never a finished one it redoes."""

    def __init__(self, folder: Path, options: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.options = options
        self._file: IO[str] | None = None

    def finished(self) -> dict[str, int]:
        """Output (relative to the folder) -> its size, for outputs recorded as done with
        these options; the last record of an output wins; a line a kill cut off is skipped."""
        sizes: dict[str, int] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return sizes
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                record = json.loads(line)
                sizes.pop(record["output"], None)
                if record["status"] == "ok" and record["options"] == self.options:
                    sizes[record["output"]] = int(record["bytes"])
        return sizes

    def open(self) -> None:
        """Open for appending, alone: a second batch writing the same folder is refused."""
        self.folder.mkdir(exist_ok=True)
        self._file = self.path.open("a+")
        if os.name == "posix":
            import fcntl

            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.close()
                msg = f"{self.folder}: another batch is writing to this folder"
                raise OptionError(msg) from None
        self._file.seek(0, os.SEEK_END)
        if self._file.tell():  # a line a kill cut off gets its end, so the next one stands alone
            self._file.seek(self._file.tell() - 1)
            if self._file.read(1) != "\n":
                self._file.write("\n")

    def add(self, source: Path, output: PurePath, coded: Coded | None, error: str | None = None) -> None:
        assert self._file is not None
        record = {
            "input": str(source),
            "output": output.as_posix(),
            "bytes": None if coded is None else len(coded.data),
            "bpp": None if coded is None else round(coded.bpp, 6),
            "psnr": None if coded is None or coded.psnr is None else round(coded.psnr, 4),
            "seconds": None if coded is None else round(coded.seconds, 4),
            "status": "failed" if coded is None else "ok",
            "error": error,
            "options": self.options,
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def code_tree(
    settings: Settings,
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | CodecModel = "default",
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Summary:
    """Code files, folders and ``@list.txt`` files into the folder ``out``, keeping their
    layout (see ``collect``), resuming from its manifest (see ``Manifest``): outputs it
    vouches for are skipped; another existing output is refused unless ``force``."""
    from ddncodec import codec

    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        msg = f"{out}: not a folder"
        raise OptionError(msg)
    if not folder.parent.is_dir():
        msg = f"{out}: folder {folder.parent} does not exist"
        raise OptionError(msg)
    if engine == "ray":
        _import_ray()
    found = collect(sources, settings.command)
    places = [(path, place.with_name(place.stem + settings.suffix)) for path, place in found]
    _check_places(places, folder)
    coder = Coder(settings, codec.load_model(model))
    manifest = Manifest(folder, settings.options(coder.model.fingerprint))
    finished = manifest.finished()
    todo = []
    clashes = []
    for path, place in places:
        target = folder / place
        with contextlib.suppress(OSError):
            if target.stat().st_size == finished.get(place.as_posix()):
                continue
            clashes.append(target)
        todo.append((path, place))
    if clashes and not force:
        msg = (
            f"{out}: {len(clashes)} outputs exist that the manifest does not vouch for (made with other options "
            f"or not by a batch), e.g. {clashes[0]}: use --force to overwrite them"
        )
        raise OptionError(msg)
    items = [Item(path, str(path), str(folder / place)) for path, place in todo]
    sizes = [_size(path) for path, _ in todo]

    def finish(i: int, coded: Coded) -> None:
        path, place = todo[i]
        target = folder / place
        target.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            tmp.write_bytes(coded.data)
            manifest.add(path, place, coded)

        write_atomically(target, write, overwrite=force)

    manifest.open()
    try:
        summary = run(
            coder,
            items,
            finish,
            failed=lambda i, line: manifest.add(todo[i][0], todo[i][1], None, line),
            engine=engine,
            workers=workers,
            address=address,
            quiet=quiet,
            sizes=sizes,
            skipped=len(places) - len(todo),
        )
    finally:
        manifest.close()
    summary.manifest = manifest.path
    if not quiet or summary.failed:
        print(
            f"ddncodec: {summary.total} inputs: {summary.coded} coded, {summary.skipped} done before, "
            f"{len(summary.failed)} failed ({summary.seconds:.1f} s; manifest {manifest.path})",
            file=sys.stderr,
        )
    return summary


def _check_places(places: list[tuple[Path, PurePath]], folder: Path) -> None:
    """Before any work, as for single files: no two inputs to one output, no input overwritten."""
    seen: dict[PurePath, Path] = {}
    for path, place in places:
        if place in seen:
            msg = f"{seen[place]} and {path} would both be written to {folder / place}; rename one"
            raise OptionError(msg)
        seen[place] = path
        if os.path.realpath(folder / place) == os.path.realpath(path):
            msg = f"{folder / place}: refusing to overwrite the input"
            raise OptionError(msg)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # it fails when read, on its own


def encode_tree(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    quality: int | None = None,
    bpp: float | None = None,
    layers: int | None = None,
    effort: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **batch: Any,
) -> Summary:
    """Encode images (files, folders, ``@list.txt``) into the folder ``out`` as .ddn
    files, keeping their layout, resumably; the options as for ``ddncodec.encode``, and
    ``engine`` ("local" or "ray"), ``workers``, ``address`` (a Ray cluster's), ``model``,
    ``force``, ``quiet`` as for ``code_tree``."""
    return code_tree(Settings("encode", quality, bpp, layers, effort, max_pixels), sources, out, **batch)


def decode_tree(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    layers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **batch: Any,
) -> Summary:
    """Decode .ddn files (files, folders, ``@list.txt``) into the folder ``out`` as PNG
    files, keeping their layout, resumably (``layers``: the coarser image of a prefix)."""
    return code_tree(Settings("decode", layers=layers, max_pixels=max_pixels), sources, out, **batch)
