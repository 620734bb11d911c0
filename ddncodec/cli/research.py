"""The research commands: train, train-filter, tune, bench, sample, guide and tree."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ddncodec.cli import FORCE, main, refuse_existing
from ddncodec.options import FilterTrainOptions, TrainOptions, TuneOptions


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
@click.option("--config", default=TrainOptions.config, show_default=True, help="Config name, JSON file or JSON string.")
@click.option("--minutes", type=click.FloatRange(min=0), help="Wall-clock budget for this invocation.")
@click.option("--steps", type=click.IntRange(min=0), help="Stop when the run reaches this many steps in total.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside --out.")
@click.option("--seed", default=TrainOptions.seed, show_default=True, type=int)
@click.option("--device", default=TrainOptions.device, show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--batch", default=TrainOptions.batch, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=TrainOptions.crop, show_default=True, type=click.IntRange(min=8))
@click.option("--lr", default=TrainOptions.lr, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option(
    "--warmup",
    default=TrainOptions.warmup,
    show_default=True,
    type=click.IntRange(min=1),
    help="Steps of linear learning-rate warm-up (from step 0).",
)
@click.option(
    "--checkpoint-minutes", default=TrainOptions.checkpoint_minutes, show_default=True, type=click.FloatRange(min=0)
)
@click.option("--val-every", default=TrainOptions.val_every, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--grow-from", type=click.Path(path_type=Path), help="Start the first layers from this (smaller) model's."
)
@click.option(
    "--train-from",
    default=TrainOptions.train_from,
    show_default=True,
    type=click.IntRange(min=0),
    help="Freeze the layers below.",
)
@click.option(
    "--rate-from",
    type=click.Path(path_type=Path),
    help="Choose as the encoder does: each crop at a rung of this model's ladder (SSE + λ·bits).",
)
@click.option(
    "--split-until",
    type=click.IntRange(min=0),
    help="Stop Split-and-Prune at this step (it balances node use, which raises index entropy) [default: never].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(**kwargs) -> None:
    """Train a model on folders of photos (resumable; Split-and-Prune, chain dropout).

    Ctrl-C or SIGTERM stops after the current step and writes a checkpoint (a second
    Ctrl-C aborts at once); --resume then continues bit for bit. Several processes:
    torchrun --nproc-per-node N -m ddncodec train ..."""
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
@click.option("--steps", default=FilterTrainOptions.steps, show_default=True, type=click.IntRange(min=1))
@click.option("--pool-crops", default=FilterTrainOptions.pool_crops, show_default=True, type=click.IntRange(min=32))
@click.option("--channels", default=FilterTrainOptions.channels, show_default=True, type=click.IntRange(1, 256))
@click.option("--blocks", default=FilterTrainOptions.blocks, show_default=True, type=click.IntRange(0, 32))
@click.option("--lr", default=FilterTrainOptions.lr, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--init", type=click.Path(path_type=Path), help="A filter checkpoint to fine-tune.")
@click.option(
    "--side-inputs/--pixels-only",
    default=FilterTrainOptions.side_inputs,
    show_default=True,
    help="Also read where cells were refined and where cell borders lie (from the index maps); with --detail, "
    "which 8x8 blocks the detail layer coded and its step.",
)
@click.option("--distill", is_flag=True, help="Learn MODEL's own post-filter's output: a cheaper filter for its gain.")
@click.option(
    "--detail",
    is_flag=True,
    help="Train the detail filter (after the detail layer of the ladder's detail rungs) instead of the post-filter.",
)
@FORCE
def train_filter(
    model: str,
    data: tuple[Path, ...],
    val: tuple[Path, ...],
    work: Path,
    output: Path,
    steps: int,
    pool_crops: int,
    channels: int,
    blocks: int,
    lr: float,
    init: Path | None,
    side_inputs: bool,
    distill: bool,
    detail: bool,
    force: bool,
) -> None:
    """Train MODEL's post-filter, or its detail filter, on its own decoded output (resumable:
    run again with the same --work)."""
    from ddncodec import codec
    from ddncodec.filtertrain import attach, train

    if detail and distill:
        msg = "--distill learns the post-filter's output: it does not go with --detail"
        raise click.UsageError(msg)
    refuse_existing(output, force)
    codec_model = codec.load_model(model)
    options = FilterTrainOptions(
        Path(model),
        list(data),
        list(val),
        work,
        channels=channels,
        blocks=blocks,
        steps=steps,
        pool_crops=pool_crops,
        lr=lr,
        init=init,
        side_inputs=side_inputs,
        distill=distill,
        detail=detail,
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
@click.option("--effort", default=1, show_default=True, type=click.IntRange(1, 2), help="ddncodec's encoder effort.")
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
    help="Folder of published Kodak curves, or 'none'; 'auto' uses the shipped Kodak curves on Kodak only.",
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
    default="context",
    show_default=True,
    type=click.Choice(["context", "learned", "uniform"]),
    help="Symbol odds: the context model's, given the cells drawn around (coherent); or every cell "
    "on its own, with the learned frequencies or uniform over K (the paper's sampler).",
)
@click.option(
    "--temperature",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 100, min_open=True),
    help="--prior context: odds ** (1/T); below 1 favours the likely symbols.",
)
@click.option("--layers", type=click.IntRange(min=1), help="Stop after this many layers (coarser images).")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@FORCE
def sample(
    count: int,
    size: str,
    output: Path,
    seed: int,
    prior: str,
    temperature: float,
    layers: int | None,
    model: str,
    force: bool,
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
    for path, image in zip(
        paths, generate.sample(codec_model, count, width, height, seed, prior, layers, temperature), strict=True
    ):
        generate.save(image, path)
        click.echo(f"{path} {width}x{height}", err=True)


def _check_generated_output(output: Path, force: bool, *inputs: Path | None) -> None:
    """Before any work (usage errors, exit 1, as encode and decode say them): ``output`` is
    none of the (given) ``inputs``, does not exist unless ``force``, and its suffix names
    an image format."""
    from ddncodec import imageio

    if os.path.realpath(output) in {os.path.realpath(p) for p in inputs if p is not None}:
        msg = f"{output}: refusing to overwrite an input"
        raise click.UsageError(msg)
    refuse_existing(output, force)
    imageio.output_format(output)


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
    "--samples",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Average this many top2 walks (seeds --seed, --seed+1, ...): the mean guess.",
)
@click.option(
    "--prior-weight",
    type=click.FloatRange(min=0),
    help="Cost per bit of a candidate's symbol under the model's priors; 0: the scorer alone. [default: 1e-3]",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Image to write (.png).")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@FORCE
def guide(
    task: str,
    condition: Path,
    mask: Path | None,
    scale: int,
    pick: str,
    seed: int,
    samples: int,
    prior_weight: float | None,
    output: Path,
    model: str,
    force: bool,
) -> None:
    """Zero-shot conditional generation: no gradients, no retraining, a scorer chooses."""
    import time

    from ddncodec import generate, guided
    from ddncodec.modelfile import load

    _check_generated_output(output, force, condition, mask)
    start = time.perf_counter()
    cond = generate.read_image(condition)
    hole = generate.read_image(mask) if mask is not None else None
    weight = guided.PRIOR_WEIGHT if prior_weight is None else prior_weight
    image = guided.guide_task(load(model), task, cond, hole, scale, pick, seed, weight, samples=samples)
    generate.save(image, output)
    size = f"{cond.width}x{cond.height} -> {image.width}x{image.height}"
    click.echo(f"{task}: {condition} {size} {output}, {time.perf_counter() - start:.1f} s", err=True)


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Figure to write (.png).")
@click.option("--levels", default=3, show_default=True, type=click.IntRange(1, 16), help="Tree levels to draw.")
@click.option("--thumb", default=48, show_default=True, type=click.IntRange(8, 512), help="Width of a child, px.")
@click.option("--model", default="default", show_default=True, help="Model name or path.")
@FORCE
def tree(image: Path, output: Path, levels: int, thumb: int, model: str, force: bool) -> None:
    """Draw the latent tree of IMAGE: each level's chosen node amid its K children."""
    from ddncodec import figures, generate
    from ddncodec.modelfile import load

    _check_generated_output(output, force, image)
    figure = figures.tree(load(model), generate.read_image(image), levels, thumb)
    generate.save(figure, output)
    click.echo(f"{output} {figure.width}x{figure.height}", err=True)


@main.command()
@click.argument("model")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training photos.")
@click.option("--val", multiple=True, required=True, type=click.Path(path_type=Path), help="Validation photos.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model file to write.")
@click.option(
    "--crops", default=TuneOptions.crops, show_default=True, type=click.IntRange(min=1), help="Training crops to count."
)
@click.option("--val-images", default=TuneOptions.val_images, show_default=True, type=click.IntRange(min=1))
@FORCE
def tune(
    model: str, data: tuple[Path, ...], val: tuple[Path, ...], output: Path, crops: int, val_images: int, force: bool
) -> None:
    """Fit MODEL's quality ladder and rate-aware priors (train on --data, tune on --val)."""
    from ddncodec import codec
    from ddncodec.tune import finalize

    refuse_existing(output, force)
    tuned = finalize(codec.load_model(model), list(data), list(val), crops=crops, val_images=val_images)
    tuned.save(output)
    rungs = ", ".join(f"q{q}: {p['bpp']} bpp {p['psnr']} dB" for q, p in enumerate(tuned.card["ladder_on_val"], 1))
    click.echo(
        f"{output}: ladder {rungs}; entropy coding saves {tuned.card['entropy_coding']['saving_percent']} %", err=True
    )
