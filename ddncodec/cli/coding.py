"""The codec's commands: encode, decode and info, with the output rules they share."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ddncodec import batch, reading
from ddncodec.atomic import write_atomically
from ddncodec.cli import FORCE, main, refuse_existing
from ddncodec.container import DEFAULT_MAX_PIXELS, Header
from ddncodec.errors import DDNError


def _name(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def _read_input(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | Path:
    """Stdin's bytes for ``-`` (no more than an input of ``max_pixels`` takes: stdin may
    never end), else the path (read by whoever understands it), once known to be a
    regular file: a FIFO would block, a device never end (``reading``; exit 1)."""
    if str(path) == "-":
        return reading.read_at_most(sys.stdin.buffer, reading.limit(max_pixels), "stdin")
    reading.require_regular(path)
    return path


def _read_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A .ddn input's bytes, bounded as ``_read_input``'s (an unreadable file is an I/O error, exit 1)."""
    return reading.input_bytes(_read_input(path, max_pixels), max_pixels)


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
    its folder must exist; ``-`` is stdout for one input, never a terminal; an existing
    target that is not a regular file (a FIFO, ``/dev/stdout``, a device) is refused
    (exit 1): a FIFO without a reader would block forever, and ``-`` is the way to stdout."""
    if output == "-":
        _check_stdout(inputs)
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
    targets = _folder_targets(inputs, output, suffix) if folder else [path]
    _check_targets(inputs, targets)
    if not folder:
        fits(path)
    for target in targets:
        refuse_existing(target, force)
    return targets


def _check_stdout(inputs: tuple[Path, ...]) -> None:
    """``-o -``: one input, and a stdout that is not a terminal."""
    if len(inputs) > 1:
        msg = "-o -: stdout takes a single input"
        raise click.UsageError(msg)
    if sys.stdout.isatty():
        msg = "-o -: refusing to write binary data to a terminal (redirect stdout to a file or a pipe)"
        raise click.UsageError(msg)


def _folder_targets(inputs: tuple[Path, ...], output: str, suffix: str) -> list[Path]:
    """``stem + suffix`` in the folder ``output`` per input; two inputs of one stem are
    refused, not left to overwrite each other."""
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        msg = f"{output}: not a folder"
        raise click.UsageError(msg)
    names = [("stdin" if str(p) == "-" else p.stem) + suffix for p in inputs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        shared = [str(p) for p, n in zip(inputs, names, strict=True) if n == clash]
        msg = f"{' and '.join(shared)} would both be written to {folder / clash}; use different folders"
        raise click.UsageError(msg)
    return [folder / name for name in names]


def _check_targets(inputs: tuple[Path, ...], targets: list[Path]) -> None:
    """No target is its own input, and none is an existing FIFO, device or other special file."""
    for source, target in zip(inputs, targets, strict=True):
        if str(source) != "-" and os.path.realpath(target) == os.path.realpath(source):  # never raises on a loop
            msg = f"{target}: refusing to overwrite the input"
            raise click.UsageError(msg)
    for target in targets:
        with contextlib.suppress(FileNotFoundError):  # a new name, or a dangling symlink (refused below)
            reading.require_regular(target)


def _write(target: Path | None, data: bytes, force: bool) -> None:
    """To stdout, or atomically (temp file + rename): never a half-written file. A batch's
    folder is made here, on its first file (its parent was checked to exist)."""
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target.parent.mkdir(exist_ok=True)
    write_atomically(target, lambda tmp: tmp.write_bytes(data), overwrite=force)


def _code(
    settings: batch.Settings,
    inputs: tuple[Path, ...],
    output: str,
    fits: Callable[[Path], object],
    model: str,
    force: bool,
    quiet: bool,
    jobs: int,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Run a command's files: folders, ``@lists`` and ``--engine ray`` as a tree (layout,
    manifest, resume: ``batch.code_tree``), plain files by the output rules above; in
    both a failed input is one line and the others are written, then the command exits
    with the worst failure's code."""
    from ddncodec import codec

    if engine == "local" and (address is not None or workers is not None):
        msg = "--address and --workers are for --engine ray (locally, --jobs)"
        raise click.UsageError(msg)
    if engine == "ray" or any(str(p).startswith("@") or p.is_dir() for p in inputs):
        if output == "-" or (Path(output).suffix and not _is_folder(output)):
            msg = f"-o {output}: a batch of folders, lists or --engine ray writes into a folder (DIR/)"
            raise click.UsageError(msg)
        summary = batch.code_tree(
            settings,
            inputs,
            output,
            model=model,
            engine=engine,
            workers=workers if engine == "ray" else jobs,
            address=address,
            force=force,
            quiet=quiet,
        )
    else:
        targets = _outputs(inputs, output, settings.suffix, fits, force)
        items = [
            batch.Item(
                _read_input(path, settings.max_pixels) if str(path) == "-" else path,  # a file is read by its worker
                _name(path),
                _shown(target),
                _image_format(target) if settings.command == "decode" else "PNG",
            )
            for path, target in zip(inputs, targets, strict=True)
        ]
        coder = batch.Coder(settings, codec.load_model(model))
        summary = batch.run(
            coder, items, lambda i, coded: _write(targets[i], coded.data, force), workers=jobs, quiet=quiet
        )
        if summary.failed and len(inputs) > 1:
            click.echo(f"ddncodec: {len(summary.failed)} of {len(inputs)} inputs failed", err=True)
    if summary.failed:
        sys.exit(summary.exit_code)


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
    """The options encode and decode share: inputs, -o, --model, --force, --quiet, --jobs,
    --threads, --max-pixels, and the batch engine's --engine, --address, --workers."""
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
        click.option(
            "-t",
            "--threads",
            type=click.IntRange(min=1),
            help="Cores one file is coded on (tiles and strips in parallel; the same bytes on any count) "
            "[default: all cores, shared out among --jobs; 1 per Ray worker].",
        ),
        _max_pixels,
        click.option(
            "--engine",
            type=click.Choice(batch.ENGINES),
            default="local",
            show_default=True,
            help="ray: code on a Ray cluster (pip install 'ddncodec[ray]'); folders, @lists and ray run as a resumable batch.",
        ),
        click.option(
            "--address", help="The Ray cluster to join, HOST:PORT or auto (default: start a Ray on this machine)."
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            help="Ray workers, one model and one thread each (default: one per CPU of the cluster).",
        ),
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
    threads: int | None,
    max_pixels: int,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Compress images (PNG, JPEG, WebP, BMP, TIFF, ...; - for stdin) to .ddn files."""
    if quality is not None and bpp is not None:
        msg = "--quality and --bpp exclude each other"
        raise click.UsageError(msg)
    settings = batch.Settings("encode", quality, bpp, layers, effort, max_pixels, threads)
    _code(settings, inputs, output, _ddn_name, model, force, quiet, jobs, engine, address, workers)


def _image_format(path: Path | None) -> str:
    """The Pillow format a decoded image is written in: from the suffix; PNG for stdout."""
    from ddncodec import imageio  # not at the top: numpy would slow every command's start

    return "PNG" if path is None else imageio.output_format(path)


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
    threads: int | None,
    max_pixels: int,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Decompress .ddn files (- for stdin) to images, fully or progressively (--layers)."""
    settings = batch.Settings("decode", layers=layers, max_pixels=max_pixels, threads=threads)
    _code(settings, inputs, output, _image_format, model, force, quiet, jobs, engine, address, workers)


def _corrections(header: Header) -> str:
    """Which colour corrections a header holds (format versions 10 and 11), in words."""
    held = [name for name, present in (("the walk's", header.walk_colour), ("the decode's", header.colour)) if present]
    return " and ".join(held) or "none"


@main.command()
@click.argument("file", type=click.Path(path_type=Path, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def info(file: Path, as_json: bool) -> None:
    """Show a .ddn file's header: size, format version, model, layers, bytes per layer and of the detail stream."""
    import json

    from ddncodec import container

    try:
        parsed = container.unpack(_read_file(file))
    except DDNError as exc:
        msg = str(exc) if str(exc).startswith(_name(file)) else f"{_name(file)}: {exc}"
        raise type(exc)(msg) from exc
    header = parsed.header
    layer_bytes = [len(s) for s in parsed.streams]
    detail_bytes = 0 if parsed.detail is None else len(parsed.detail)
    stream_bytes = layer_bytes + ([detail_bytes] if parsed.detail is not None else [])
    facts = {
        "file": str(file),
        "bytes": parsed.size,
        "format_version": header.version,
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
        "colour_correction": header.colour.hex() or None,
        "walk_colour_correction": header.walk_colour.hex() or None,
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
        f"{file}: {parsed.size:,} bytes, format version {header.version}, {header.width}x{header.height} {header.mode}, "
        f"{facts['bpp']:.4f} bpp\n"
        f"model {facts['model']}, {present}, every stream's checksum verified, "
        f"post-filter {'on' if header.filtered else 'off'}, colour corrections: {_corrections(header)}\n"
        f"bytes per layer: {' '.join(map(str, layer_bytes)) or 'none, every block is smooth'} (header {facts['header_bytes']})"
    )
