"""The ``ddncodec`` command line. Exit codes: 0 ok, 1 usage or I/O error, 2 bad or
corrupt input; every failure is one line on stderr, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ddncodec.errors import DDNError


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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(**kwargs) -> None:
    """Train a model on folders of photos (resumable; Split-and-Prune, chain dropout)."""
    from ddncodec.train import TrainOptions
    from ddncodec.train import train as run

    kwargs["data"] = list(kwargs["data"])
    kwargs["val"] = list(kwargs["val"])
    if not kwargs["out"].name.endswith(".safetensors"):
        kwargs["out"] = kwargs["out"].with_name(kwargs["out"].name + ".safetensors")
    run(TrainOptions(**kwargs))
