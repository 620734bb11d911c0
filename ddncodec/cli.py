"""The ``ddncodec`` command line. Exit codes: 0 ok, 1 usage or I/O error, 2 bad or
corrupt input; every failure is one line on stderr, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ddncodec.atomic import write_atomically
from ddncodec.container import DEFAULT_PIXEL_LIMIT
from ddncodec.errors import DDNError, InputError

_FORCE = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")


def _refuse_existing(target: Path, force: bool) -> None:
    """Every command that writes: an existing output (a dangling symlink too) is a usage
    error (exit 1) unless ``force``. The write itself creates the name exclusively, so
    this holds under races too; this early check only saves the work."""
    if os.path.lexists(target) and not force:
        msg = f"{target}: already exists (use --force to overwrite)"
        raise click.UsageError(msg)


class Group(click.Group):
    """Maps library errors to exit codes at the one edge where that belongs."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DDNError as exc:
            click.echo(f"ddncodec: error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            click.echo(f"ddncodec: error: {exc}", err=True)
            sys.exit(1)

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("ddncodec: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:  # usage errors exit 1, not click's 2
            click.echo(f"ddncodec: error: {exc.format_message()}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ddncodec", prog_name="ddncodec")
def main() -> None:
    """ddncodec: a learned image codec built on Discrete Distribution Networks."""


@main.command()
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of training photos (repeatable).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Model file to write (.safetensors); checkpoint and log go beside it.",
)
@click.option("--val", multiple=True, type=click.Path(path_type=Path), help="Folder of validation photos (repeatable).")
@click.option("--config", default="base", show_default=True, help="Config name, JSON file or JSON string.")
@click.option("--minutes", type=click.FloatRange(min=0), help="Wall-clock budget for this invocation.")
@click.option("--steps", type=click.IntRange(min=0), help="Stop when the run reaches this many steps in total.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside --out.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=128, show_default=True, type=click.IntRange(min=8))
@click.option("--lr", default=5e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--checkpoint-minutes", default=10.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--val-every", default=250, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--grow-from", type=click.Path(path_type=Path), help="Start the first layers from this (smaller) model's."
)
@click.option("--train-from", default=0, show_default=True, type=click.IntRange(min=0), help="Freeze the layers below.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(**kwargs) -> None:
    """Train a model on folders of photos (resumable; Split-and-Prune, chain dropout).

    Ctrl-C or SIGTERM stops after the current step and writes a checkpoint (a second
    Ctrl-C aborts at once); --resume then continues bit for bit. Several processes:
    torchrun --nproc-per-node N -m ddncodec train ..."""
    from ddncodec.train import TrainOptions
    from ddncodec.train import train as run

    kwargs["data"] = list(kwargs["data"])
    kwargs["val"] = list(kwargs["val"])
    if not kwargs["out"].name.endswith(".safetensors"):
        kwargs["out"] = kwargs["out"].with_name(kwargs["out"].name + ".safetensors")
    run(TrainOptions(**kwargs))


@main.command("train-filter")
@click.argument("model")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training photos.")
@click.option("--val", multiple=True, required=True, type=click.Path(path_type=Path), help="Validation photos.")
@click.option("--work", required=True, type=click.Path(path_type=Path), help="Folder for pool, checkpoint and log.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model file to write.")
@click.option("--steps", default=8000, show_default=True, type=click.IntRange(min=1))
@click.option("--pool-crops", default=512, show_default=True, type=click.IntRange(min=32))
@click.option("--init", type=click.Path(path_type=Path), help="A post-filter checkpoint to fine-tune.")
@_FORCE
def train_filter(
    model: str,
    data: tuple[Path, ...],
    val: tuple[Path, ...],
    work: Path,
    output: Path,
    steps: int,
    pool_crops: int,
    init: Path | None,
    force: bool,
) -> None:
    """Train MODEL's post-filter on its own decoded output (resumable: run again with the same --work)."""
    from ddncodec import codec
    from ddncodec.filtertrain import FilterTrainOptions, attach, train

    _refuse_existing(output, force)
    codec_model = codec.load_model(model)
    options = FilterTrainOptions(
        Path(model), list(data), list(val), work, steps=steps, pool_crops=pool_crops, init=init
    )
    attach(codec_model, train(options, codec_model), options).save(output)


def _comma_list(kind: type) -> object:
    """A click callback turning "a,b,c" into a tuple of ``kind`` (None stays None)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            msg = f"expected a comma-separated list, got {value!r}"
            raise click.BadParameter(msg, ctx, param) from None

    return parse


@main.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the report, JSON and plot.")
@click.option("--quick", is_flag=True, help="Two images and three qualities per codec (the CI smoke test).")
@click.option("--qualities", callback=_comma_list(int), help="ddncodec qualities, e.g. 1,4,8 [default: 1..8].")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@click.option(
    "--codecs",
    callback=_comma_list(str),
    help="Subset of ddncodec,jpeg,webp,avif,jxl,standin [default: all].",
)
@click.option("--threads", type=click.IntRange(min=1), help="torch threads per codec [default: every core].")
@click.option(
    "--published",
    default="auto",
    show_default=True,
    help="Folder of published Kodak curves, or 'none'; 'auto' uses benchmarks/published/kodak on Kodak only.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(**kwargs) -> None:
    """Rate–distortion, speed and memory of ddncodec against JPEG, WebP, AVIF, JPEG XL and published curves."""
    try:
        from ddncodec.bench.runner import BenchOptions, run
    except ImportError as exc:
        msg = f"bench needs its optional packages: pip install 'ddncodec[bench]' ({exc})"
        raise click.ClickException(msg) from exc

    kwargs["codecs"] = kwargs["codecs"] or BenchOptions.codecs
    results = run(BenchOptions(**kwargs))
    click.echo(f"{kwargs['out'] / 'report.md'}: {results['run']['wall_s']:.0f} s", err=True)


@main.command()
@click.option("-n", "--count", default=1, show_default=True, type=click.IntRange(min=1), help="Images to make.")
@click.option("--size", default="256x256", show_default=True, help="WxH of every image.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder for sample_0000.png, ...")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--prior",
    default="learned",
    show_default=True,
    type=click.Choice(["learned", "uniform"]),
    help="Symbol odds: the model's learned frequencies, or uniform over K (the paper's sampler).",
)
@click.option("--layers", type=click.IntRange(min=1), help="Stop after this many layers (coarser images).")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@_FORCE
def sample(
    count: int, size: str, output: Path, seed: int, prior: str, layers: int | None, model: str, force: bool
) -> None:
    """Images from random index paths: the codec's network as a generator."""
    from ddncodec import generate
    from ddncodec.modelfile import load

    width, height = generate.parse_size(size)
    paths = [output / f"sample_{i:04d}.png" for i in range(count)]
    for path in paths:
        _check_generated_output(path, force)
    codec_model = load(model)
    output.mkdir(parents=True, exist_ok=True)
    for path, image in zip(paths, generate.sample(codec_model, count, width, height, seed, prior, layers), strict=True):
        generate.save(image, path)
        click.echo(f"{path} {width}x{height}", err=True)


def _check_generated_output(output: Path, force: bool, *inputs: Path | None) -> None:
    """Before any work: ``output`` is none of the (given) ``inputs`` (InputError, exit 2),
    does not exist unless ``force`` (usage error, exit 1, as encode and decode say it), and
    its suffix names an image format."""
    from ddncodec import generate

    if os.path.realpath(output) in {os.path.realpath(p) for p in inputs if p is not None}:
        msg = f"{output}: refusing to overwrite an input"
        raise InputError(msg)
    _refuse_existing(output, force)
    generate.image_format(output)


@main.command()
@click.option("--task", required=True, type=click.Choice(["superres", "colorize", "inpaint"]))
@click.option("--condition", "condition", required=True, type=click.Path(path_type=Path), help="The image to match.")
@click.option(
    "--mask",
    type=click.Path(path_type=Path),
    help="inpaint: same size as the condition; its light pixels (>= 128) are filled in.",
)
@click.option("--scale", default=4, show_default=True, type=click.IntRange(2, 16), help="superres: upscaling factor.")
@click.option(
    "--pick",
    default="best",
    show_default=True,
    type=click.Choice(["best", "top2"]),
    help="Per cell the best candidate, or one of the two best at random (more varied).",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="For --pick top2.")
@click.option(
    "--prior-weight",
    type=click.FloatRange(min=0),
    help="Cost per bit of a candidate's symbol under the model's priors; 0: the scorer alone. [default: 1e-3]",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Image to write (.png).")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@_FORCE
def guide(
    task: str,
    condition: Path,
    mask: Path | None,
    scale: int,
    pick: str,
    seed: int,
    prior_weight: float | None,
    output: Path,
    model: str,
    force: bool,
) -> None:
    """Zero-shot conditional generation: no gradients, no retraining, a scorer chooses."""
    import time

    from ddncodec import generate
    from ddncodec.modelfile import load

    _check_generated_output(output, force, condition, mask)
    start = time.perf_counter()
    cond = generate.read_image(condition)
    hole = generate.read_image(mask) if mask is not None else None
    weight = generate.PRIOR_WEIGHT if prior_weight is None else prior_weight
    image = generate.guide_task(load(model), task, cond, hole, scale, pick, seed, weight)
    generate.save(image, output)
    size = f"{cond.width}x{cond.height} -> {image.width}x{image.height}"
    click.echo(f"{task}: {condition} {size} {output}, {time.perf_counter() - start:.1f} s", err=True)


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Figure to write (.png).")
@click.option("--levels", default=3, show_default=True, type=click.IntRange(1, 16), help="Tree levels to draw.")
@click.option("--thumb", default=48, show_default=True, type=click.IntRange(8, 512), help="Width of a child, px.")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@_FORCE
def tree(image: Path, output: Path, levels: int, thumb: int, model: str, force: bool) -> None:
    """Draw the latent tree of IMAGE: each level's chosen node amid its K children."""
    from ddncodec import generate
    from ddncodec.modelfile import load

    _check_generated_output(output, force, image)
    figure = generate.tree(load(model), generate.read_image(image), levels, thumb)
    generate.save(figure, output)
    click.echo(f"{output} {figure.width}x{figure.height}", err=True)


# ---------------------------------------------------------------- codec commands


def _read_input(path: Path) -> bytes | Path:
    """Stdin's bytes for ``-``, else the path (read by whoever understands it)."""
    return sys.stdin.buffer.read() if str(path) == "-" else path


def _read_file(path: Path) -> bytes:
    """A .ddn input's bytes; an unreadable one is bad input (exit 2), like a corrupt one."""
    source = _read_input(path)
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read ({exc.strerror or exc})"
        raise InputError(msg) from exc


def _outputs(inputs: tuple[Path, ...], output: Path, suffix: str, force: bool) -> list[Path | None]:
    """Where each input goes (None: stdout). OUT is a file for one input, a folder for
    many; checked before any work so a batch never stops half-way on a name clash."""
    many = len(inputs) > 1
    if str(output) == "-":
        if many:
            msg = "-o -: stdout takes a single input"
            raise click.UsageError(msg)
        return [None]
    if many and "-" in {str(p) for p in inputs}:
        msg = "stdin (-) can only be read as a single input"
        raise click.UsageError(msg)
    if many or output.is_dir():
        if output.exists() and not output.is_dir():
            msg = f"{output}: not a folder, and {len(inputs)} inputs need one"
            raise click.UsageError(msg)
        names = [("stdin" if str(p) == "-" else p.stem) + suffix for p in inputs]
        if len(set(names)) < len(names):
            clash = next(n for n in names if names.count(n) > 1)
            shared = [str(p) for p, n in zip(inputs, names, strict=True) if n == clash]
            msg = f"{' and '.join(shared)} would both be written to {output / clash}; use different folders"
            raise click.UsageError(msg)
        targets = [output / name for name in names]
    else:
        targets = [output]
    for source, target in zip(inputs, targets, strict=True):
        if str(source) != "-" and os.path.realpath(target) == os.path.realpath(source):  # never raises on a loop
            msg = f"{target}: refusing to overwrite the input"
            raise click.UsageError(msg)
        _refuse_existing(target, force)
    return targets


def _write(target: Path | None, data: bytes, force: bool) -> None:
    """To stdout, or atomically (temp file + rename): never a half-written file."""
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda tmp: tmp.write_bytes(data), overwrite=force)


Work = Callable[[int, Callable[[str], None]], None]
_batch_work: Work | None = None  # the running batch's work, inherited by forked workers


def _attempt(work: Work, i: int) -> tuple[list[str], tuple[str, str] | None]:
    """Run ``work`` on input ``i``: its summary lines and its error (kind, message), if any."""
    lines: list[str] = []
    try:
        work(i, lines.append)
    except DDNError as exc:
        return lines, ("input", str(exc))
    except OSError as exc:
        return lines, ("io", str(exc))
    return lines, None


def _in_worker(i: int) -> tuple[list[str], tuple[str, str] | None]:
    assert _batch_work is not None  # set before the pool forks
    return _attempt(_batch_work, i)


def _results(count: int, work: Work, jobs: int) -> Iterator[tuple[list[str], tuple[str, str] | None]]:
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
    terminal. In a batch a bad input is reported on one line and skipped, the others'
    outputs are kept, and the command exits 2 at the end; an I/O error ends it (exit 1)."""
    from tqdm import tqdm

    shown = not quiet and len(inputs) > 1 and sys.stderr.isatty()
    bar = tqdm(total=len(inputs), disable=not shown, unit="file", file=sys.stderr, leave=False)
    failed = 0
    with bar:
        for path, (lines, error) in zip(inputs, _results(len(inputs), work, jobs), strict=True):
            for line in [] if quiet else lines:
                bar.write(line, file=sys.stderr)
            if error is not None:
                kind, message = error
                named = message if str(path) in message else f"{path}: {message}"
                if kind == "io":
                    raise OSError(named)
                if len(inputs) == 1:
                    raise InputError(named)
                failed += 1
                bar.write(f"ddncodec: error: {named}", file=sys.stderr)
            bar.update(1)
    if failed:
        click.echo(f"ddncodec: {failed} of {len(inputs)} inputs failed", err=True)
        sys.exit(2)


def _shown(path: Path | None) -> str:
    return "stdout" if path is None else str(path)


_max_pixels = click.option(
    "--max-pixels",
    default=DEFAULT_PIXEL_LIMIT,
    show_default=True,
    type=click.IntRange(min=1),
    help="Refuse larger images (checked before anything is allocated).",
)


def _file_batch(output_help: str) -> Callable[[Callable], Callable]:
    """The options encode and decode share: inputs, -o, --model, --force, --quiet, --max-pixels."""
    options = [
        click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True)),
        click.option(
            "-o", "--output", required=True, type=click.Path(path_type=Path, allow_dash=True), help=output_help
        ),
        click.option("--model", default="default", show_default=True, help="Model name or path."),
        _FORCE,
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


@main.command()
@_file_batch("File, folder, or - for stdout.")
@click.option("-q", "--quality", type=click.IntRange(1, 8), help="1 (smallest) .. 8 (best); default 5.")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), help="Target bits per pixel (whole file).")
@click.option("--layers", type=click.IntRange(min=1), help="Layers to code (alone: plain nearest choice).")
def encode(
    inputs: tuple[Path, ...],
    output: Path,
    quality: int | None,
    bpp: float | None,
    layers: int | None,
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

    targets = _outputs(inputs, output, ".ddn", force)
    codec_model = codec.load_model(model)

    def work(i: int, say: Callable[[str], None]) -> None:
        source = _read_input(inputs[i])
        result = codec.encode(source, codec_model, quality, bpp=bpp, layers=layers, pixel_limit=max_pixels)
        _write(targets[i], result.data, force)
        say(
            f"{inputs[i]} {result.width}x{result.height} -> {_shown(targets[i])}: {len(result.data):,} B, "
            f"{result.bpp:.4f} bpp, {result.psnr:.2f} dB ({result.rung.layers} layers, λ {result.rung.lam:g})"
        )

    _each(inputs, quiet, work, jobs)


@main.command()
@_file_batch("Image file (format from its suffix; .png for a folder or stdout), folder, or -.")
@click.option("--layers", type=click.IntRange(min=1), help="Decode only the first N layers (coarser image).")
def decode(
    inputs: tuple[Path, ...],
    output: Path,
    layers: int | None,
    model: str,
    force: bool,
    quiet: bool,
    jobs: int,
    max_pixels: int,
) -> None:
    """Decompress .ddn files (- for stdin) to images, fully or progressively (--layers)."""
    import io

    from PIL import Image

    from ddncodec import codec, container, imageio

    targets = _outputs(inputs, output, ".png", force)
    formats = []
    for target in targets:
        fmt = "PNG" if target is None else Image.registered_extensions().get(target.suffix.lower())
        if fmt is None:
            msg = f"{target}: unknown image file extension (use .png)"
            raise click.UsageError(msg)
        formats.append(fmt)
    codec_model = codec.load_model(model)

    def work(i: int, say: Callable[[str], None]) -> None:
        data = _read_file(inputs[i])
        header, _ = container.parse_header(data, max_pixels)
        imageio.check_fits(header.width, header.height, formats[i])
        image = codec.decode(data, codec_model, layers, pixel_limit=max_pixels)
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=formats[i])
        except Exception as exc:  # a writer's own limits or bugs: one line, and the batch goes on
            msg = f"cannot write {formats[i]} ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        _write(targets[i], buffer.getvalue(), force)
        say(f"{inputs[i]} -> {_shown(targets[i])}: {image.width}x{image.height} {image.mode}")

    _each(inputs, quiet, work, jobs)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def info(file: Path, as_json: bool) -> None:
    """Show a .ddn file's header: size, model, layers, bytes per layer."""
    import json

    from ddncodec import container

    parsed = container.unpack(_read_file(file))
    header = parsed.header
    layer_bytes = [len(s) for s in parsed.streams]
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
        "header_bytes": parsed.size - sum(layer_bytes) - container.LAYER_CRC_BYTES * len(layer_bytes),
        "layer_bytes": layer_bytes,
    }
    if as_json:
        click.echo(json.dumps(facts))
        return
    present = (
        f"a prefix: {len(parsed.streams)} of {header.layers}" if not parsed.complete else f"complete: {header.layers}"
    )
    click.echo(
        f"{file}: {parsed.size:,} bytes, {header.width}x{header.height} {header.mode}, {facts['bpp']:.4f} bpp\n"
        f"model {facts['model']}, {present} layers, every layer's checksum verified, "
        f"post-filter {'on' if header.filtered else 'off'}\n"
        f"bytes per layer: {' '.join(map(str, layer_bytes))} (header {facts['header_bytes']})"
    )


@main.command()
@click.argument("model")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training photos.")
@click.option("--val", multiple=True, required=True, type=click.Path(path_type=Path), help="Validation photos.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model file to write.")
@click.option("--crops", default=256, show_default=True, type=click.IntRange(min=1), help="Training crops to count.")
@click.option("--val-images", default=16, show_default=True, type=click.IntRange(min=1))
@_FORCE
def tune(
    model: str, data: tuple[Path, ...], val: tuple[Path, ...], output: Path, crops: int, val_images: int, force: bool
) -> None:
    """Fit MODEL's quality ladder and rate-aware priors (train on --data, tune on --val)."""
    from ddncodec import codec
    from ddncodec.tune import finalize

    _refuse_existing(output, force)
    tuned = finalize(codec.load_model(model), list(data), list(val), crops=crops, val_images=val_images)
    tuned.save(output)
    rungs = ", ".join(f"q{q}: {p['bpp']} bpp {p['psnr']} dB" for q, p in enumerate(tuned.card["ladder_on_val"], 1))
    click.echo(
        f"{output}: ladder {rungs}; entropy coding saves {tuned.card['entropy_coding']['saving_percent']} %", err=True
    )
