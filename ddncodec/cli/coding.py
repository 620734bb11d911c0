"""The codec's commands: encode, decode and info, with the output rules they share."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ddncodec.atomic import write_atomically
from ddncodec.cli import FORCE, exit_code, main, message, refuse_existing
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import DDNError, InputError


def _name(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def _read_input(path: Path) -> bytes | Path:
    """Stdin's bytes for ``-``, else the path (read by whoever understands it)."""
    return sys.stdin.buffer.read() if str(path) == "-" else path


def _read_file(path: Path) -> bytes:
    """A .ddn input's bytes (an unreadable file is an I/O error, exit 1)."""
    source = _read_input(path)
    return source if isinstance(source, bytes) else source.read_bytes()


def _is_folder(output: str) -> bool:
    """``-o DIR/`` (a trailing slash) or an existing folder is a folder, whatever the input count."""
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def _outputs(
    inputs: tuple[Path, ...], output: str, suffix: str, fits: Callable[[Path], object], force: bool
) -> list[Path | None]:
    """Where each input goes (None: stdout), checked before any work so that a batch
    never stops half-way on a name clash. The rules, as cwebp/cjxl users expect: a folder
    (see ``_is_folder``) takes ``stem + suffix`` per input; several inputs need one (a
    new name without a suffix is created as one); a file name must pass ``fits`` and
    its folder must exist; ``-`` is stdout for one input, never a terminal."""
    if output == "-":
        if len(inputs) > 1:
            msg = "-o -: stdout takes a single input"
            raise click.UsageError(msg)
        if sys.stdout.isatty():
            msg = "-o -: refusing to write binary data to a terminal (redirect stdout to a file or a pipe)"
            raise click.UsageError(msg)
        return [None]
    if len(inputs) > 1 and "-" in {str(p) for p in inputs}:
        msg = "stdin (-) can only be read as a single input"
        raise click.UsageError(msg)
    path = Path(output)
    folder = _is_folder(output) or (len(inputs) > 1 and not path.exists() and not path.suffix)
    if len(inputs) > 1 and not folder:
        msg = f"{output}: {len(inputs)} inputs need a folder (an existing one, or a name ending in /)"
        raise click.UsageError(msg)
    if not path.parent.is_dir():
        msg = f"{output}: folder {path.parent} does not exist"
        raise click.UsageError(msg)
    if folder:
        if path.exists() and not path.is_dir():
            msg = f"{output}: not a folder"
            raise click.UsageError(msg)
        names = [("stdin" if str(p) == "-" else p.stem) + suffix for p in inputs]
        if len(set(names)) < len(names):
            clash = next(n for n in names if names.count(n) > 1)
            shared = [str(p) for p, n in zip(inputs, names, strict=True) if n == clash]
            msg = f"{' and '.join(shared)} would both be written to {path / clash}; use different folders"
            raise click.UsageError(msg)
        targets = [path / name for name in names]
    else:
        targets = [path]
    for source, target in zip(inputs, targets, strict=True):
        if str(source) != "-" and os.path.realpath(target) == os.path.realpath(source):  # never raises on a loop
            msg = f"{target}: refusing to overwrite the input"
            raise click.UsageError(msg)
    if not folder and (path.is_file() or not path.exists()):  # a FIFO or /dev/null takes any bytes
        fits(path)
    for target in targets:
        refuse_existing(target, force)
    return targets


def _write(target: Path | None, data: bytes, force: bool) -> None:
    """To stdout, or atomically (temp file + rename): never a half-written file. A batch's
    folder is made here, on its first file (its parent was checked to exist)."""
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target.parent.mkdir(exist_ok=True)
    write_atomically(target, lambda tmp: tmp.write_bytes(data), overwrite=force)


Work = Callable[[int, Callable[[str], None]], None]
Outcome = tuple[list[str], tuple[int, str] | None]  # summary lines; the error's exit code and message
_batch_work: Work | None = None  # the running batch's work, inherited by forked workers


def _attempt(work: Work, i: int) -> Outcome:
    """Run ``work`` on input ``i``: its summary lines and its error, if any."""
    lines: list[str] = []
    try:
        work(i, lines.append)
    except (DDNError, OSError) as exc:
        return lines, (exit_code(exc), message(exc))
    return lines, None


def _in_worker(i: int) -> Outcome:
    assert _batch_work is not None  # set before the pool forks
    return _attempt(_batch_work, i)


def _results(count: int, work: Work, jobs: int) -> Iterator[Outcome]:
    """Each input's outcome, in input order: in this process, or in ``jobs`` forked
    workers (each codes on one torch thread, so the bytes are the same either way)."""
    global _batch_work
    if jobs < 2 or count < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (_attempt(work, i) for i in range(count))
        return
    _batch_work = work
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, count)) as pool:
            yield from pool.imap(_in_worker, range(count))
    finally:
        _batch_work = None


def _each(inputs: tuple[Path, ...], quiet: bool, work: Work, jobs: int = 1) -> None:
    """Run ``work(i, say)`` per input (``jobs`` at a time) with a progress bar on a
    terminal. A failed input is reported on one line naming it and skipped, the others'
    outputs are kept; the command then exits with the worst failure's code."""
    from tqdm import tqdm

    shown = not quiet and len(inputs) > 1 and sys.stderr.isatty()
    bar = tqdm(total=len(inputs), disable=not shown, unit="file", file=sys.stderr, leave=False)
    codes = []
    with bar:
        for path, (lines, error) in zip(inputs, _results(len(inputs), work, jobs), strict=True):
            for line in [] if quiet else lines:
                bar.write(line, file=sys.stderr)
            if error is not None:
                code, text = error
                named = text if text.startswith(_name(path)) else f"{_name(path)}: {text}"
                codes.append(code)
                bar.write(f"ddncodec: error: {named}", file=sys.stderr)
            bar.update(1)
    if codes:
        if len(inputs) > 1:
            click.echo(f"ddncodec: {len(codes)} of {len(inputs)} inputs failed", err=True)
        sys.exit(max(codes))


def _shown(path: Path | None) -> str:
    return "stdout" if path is None else str(path)


_max_pixels = click.option(
    "--max-pixels",
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Refuse larger images (checked before anything is allocated).",
)


def _file_batch(output_help: str) -> Callable[[Callable], Callable]:
    """The options encode and decode share: inputs, -o, --model, --force, --quiet, --max-pixels."""
    options = [
        click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True)),
        click.option("-o", "--output", required=True, type=click.Path(allow_dash=True), help=output_help),
        click.option("--model", default="default", show_default=True, help="Model name or path."),
        FORCE,
        click.option("--quiet", is_flag=True, help="No progress bar, no summary lines."),
        click.option(
            "-j",
            "--jobs",
            default=os.cpu_count() or 1,
            show_default="the core count",
            type=click.IntRange(min=1),
            help="Files coded at once, each in its own process on one thread.",
        ),
        _max_pixels,
    ]

    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _ddn_name(path: Path) -> None:
    if path.suffix.lower() != ".ddn":
        msg = f"{path}: encode writes .ddn files: name the output *.ddn, a folder (ending in /), or -"
        raise click.UsageError(msg)


@main.command()
@_file_batch("A .ddn file, a folder (DIR/ or an existing one: one .ddn per input), or - for stdout.")
@click.option("-q", "--quality", type=click.IntRange(1, 8), help="1 (smallest) .. 8 (best); default 5.")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), help="Target bits per pixel (whole file).")
@click.option("--layers", type=click.IntRange(min=1), help="Layers to code (alone: plain nearest choice).")
@click.option(
    "-e",
    "--effort",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="2: about 2.3x the encode time; each quality ~10% larger and sharper, 1.5% smaller at equal PSNR (decoding is the same).",
)
def encode(
    inputs: tuple[Path, ...],
    output: str,
    quality: int | None,
    bpp: float | None,
    layers: int | None,
    effort: int,
    model: str,
    force: bool,
    quiet: bool,
    jobs: int,
    max_pixels: int,
) -> None:
    """Compress images (PNG, JPEG, WebP, BMP, TIFF, ...; - for stdin) to .ddn files."""
    if quality is not None and bpp is not None:
        msg = "--quality and --bpp exclude each other"
        raise click.UsageError(msg)
    from ddncodec import codec

    targets = _outputs(inputs, output, ".ddn", _ddn_name, force)
    codec_model = codec.load_model(model)

    def work(i: int, say: Callable[[str], None]) -> None:
        source = _read_input(inputs[i])
        result = codec.encode(
            source, codec_model, quality, bpp=bpp, layers=layers, effort=effort, max_pixels=max_pixels
        )
        _write(targets[i], result.data, force)
        say(
            f"{_name(inputs[i])} {result.width}x{result.height} -> {_shown(targets[i])}: {len(result.data):,} B, "
            f"{result.bpp:.4f} bpp, {result.psnr:.2f} dB ({result.rung.layers} layers, λ {result.rung.lam:g}"
            f"{f', detail step {result.rung.detail}' if result.rung.detail else ''})"
        )
        if result.frames > 1:
            say(f"{_name(inputs[i])}: coded frame 1 of {result.frames} (a .ddn file holds one still image)")
        if bpp is not None and not codec.reached(result, bpp):
            say(
                f"{_name(inputs[i])}: --bpp {bpp:g} is out of reach for this image; the closest is {result.bpp:.4f} bpp"
            )

    _each(inputs, quiet, work, jobs)


def _image_format(path: Path | None) -> str:
    """The Pillow format a decoded image is written in: from the suffix; PNG for stdout,
    a FIFO or a device."""
    if path is None or (path.exists() and not path.is_file()):
        return "PNG"
    from PIL import Image

    if path.suffix.lower() == ".ddn":
        msg = f"{path}: decode writes images, not .ddn files (name the output .png, .webp, ...)"
        raise click.UsageError(msg)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        msg = f"{path}: unknown image file extension (use .png)"
        raise click.UsageError(msg)
    return fmt


@main.command()
@_file_batch("An image file (format from its suffix), a folder (DIR/ or an existing one: .png files), or -.")
@click.option("--layers", type=click.IntRange(min=1), help="Decode only the first N layers (coarser image).")
def decode(
    inputs: tuple[Path, ...],
    output: str,
    layers: int | None,
    model: str,
    force: bool,
    quiet: bool,
    jobs: int,
    max_pixels: int,
) -> None:
    """Decompress .ddn files (- for stdin) to images, fully or progressively (--layers)."""
    import io

    from ddncodec import codec, container, imageio

    targets = _outputs(inputs, output, ".png", _image_format, force)
    formats = [_image_format(target) for target in targets]
    codec_model = codec.load_model(model)

    def work(i: int, say: Callable[[str], None]) -> None:
        data = _read_file(inputs[i])
        header, _ = container.parse_header(data, max_pixels)
        imageio.check_fits(header.width, header.height, formats[i])
        image = codec.decode(data, codec_model, layers, max_pixels=max_pixels)
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=formats[i])
        except Exception as exc:  # a writer's own limits or bugs: one line, and the batch goes on
            msg = f"cannot write {formats[i]} ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        _write(targets[i], buffer.getvalue(), force)
        say(f"{_name(inputs[i])} -> {_shown(targets[i])}: {image.width}x{image.height} {image.mode}")

    _each(inputs, quiet, work, jobs)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def info(file: Path, as_json: bool) -> None:
    """Show a .ddn file's header: size, model, layers, bytes per layer and of the detail stream."""
    import json

    from ddncodec import container

    try:
        parsed = container.unpack(_read_file(file))
    except DDNError as exc:
        msg = f"{_name(file)}: {exc}"
        raise type(exc)(msg) from exc
    header = parsed.header
    layer_bytes = [len(s) for s in parsed.streams]
    detail_bytes = 0 if parsed.detail is None else len(parsed.detail)
    stream_bytes = layer_bytes + ([detail_bytes] if parsed.detail is not None else [])
    facts = {
        "file": str(file),
        "bytes": parsed.size,
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "bpp": round(8 * parsed.size / (header.width * header.height), 6),
        "model": header.fingerprint.hex(),
        "layers": header.layers,
        "layers_present": len(parsed.streams),
        "complete": parsed.complete,
        "table_set": header.table_set,
        "postfilter": header.filtered,
        "checksums": f"verified for the {len(parsed.streams)} layers present, of {header.layers}",
        "header_bytes": parsed.size - sum(stream_bytes) - container.LAYER_CRC_BYTES * len(stream_bytes),
        "layer_bytes": layer_bytes,
        "detail_step": header.detail_step,
        "detail_bytes": detail_bytes,
        "detail_filter": header.detail_filtered,
    }
    if as_json:
        click.echo(json.dumps(facts))
        return
    present = (
        f"a prefix: {len(parsed.streams)} of {header.layers}" if not parsed.complete else f"complete: {header.layers}"
    )
    if header.detail_step:
        shown = f"{detail_bytes:,} B" if parsed.detail is not None else "cut off"
        filter_note = ", detail filter on" if header.detail_filtered else ""
        present += f" layers + detail (step {header.detail_step}, {shown}{filter_note})"
    else:
        present += " layers"
    click.echo(
        f"{file}: {parsed.size:,} bytes, {header.width}x{header.height} {header.mode}, {facts['bpp']:.4f} bpp\n"
        f"model {facts['model']}, {present}, every stream's checksum verified, "
        f"post-filter {'on' if header.filtered else 'off'}\n"
        f"bytes per layer: {' '.join(map(str, layer_bytes))} (header {facts['header_bytes']})"
    )
