"""The photo-library commands: similar (near-duplicates of a photo among .ddn files) and
index (their signatures kept in a file, so a search reads no library file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ddncodec.cli import main
from ddncodec.errors import DDNError

if TYPE_CHECKING:
    from ddncodec.similar import Library

_model = click.option(
    "--model",
    default="default",
    show_default=True,
    help="The model the .ddn files were made with (a former default's files are read with it); loaded only to read a file.",
)
_library = click.argument("library", nargs=-1, type=click.Path(exists=True, path_type=Path))


def _warn(line: str) -> None:
    click.echo(f"ddncodec: warning: {line} (skipped)", err=True)


def _files(library: tuple[Path, ...]) -> list[Path]:
    """The .ddn files of the LIBRARY arguments (folders searched recursively), each once."""
    from ddncodec import batch

    seen: dict[str, Path] = {}
    for path, _ in batch.collect(library, "decode"):
        seen.setdefault(os.path.abspath(path), path)
    return list(seen.values())


def _read_note(found: Library) -> str:
    """How many files a survey read, and the bytes per file that took."""
    read = found.read
    return f"{read} read ({found.bytes_read / read:,.0f} bytes each on average)" if read else "none read"


@main.command()
@click.argument("query", type=click.Path(path_type=Path, dir_okay=False))
@_library
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(min=1), help="How many files to list.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {path, score} instead of text.")
@click.option(
    "--index",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Take the signatures of unchanged files from this file (ddncodec index); with no LIBRARY, search its files.",
)
@_model
def similar(query: Path, library: tuple[Path, ...], count: int, as_json: bool, index: Path | None, model: str) -> None:
    """The .ddn files of LIBRARY (files or folders) most like QUERY (an image or a .ddn
    file), best first, with a score (1: the same thumbnail, in any of the eight
    orientations). Each library file is read only as far as its first layers; one that
    cannot be read is skipped with a warning. QUERY itself is never listed."""
    import json

    from ddncodec import similar as search

    if not library and index is None:
        msg = "name a LIBRARY of .ddn files or folders, or an --index"
        raise click.UsageError(msg)
    known = {} if index is None else search.load_index(index)
    try:
        signature = search.of_query(query, model, known)
    except DDNError as exc:  # bad input: exit 2, named as ``info`` names it
        msg = str(exc) if str(exc).startswith(str(query)) else f"{query}: {exc}"
        raise type(exc)(msg) from exc
    paths = _files(library) if library else [Path(p) for p in known]
    itself = os.path.realpath(query)
    found = search.survey([p for p in paths if os.path.realpath(p) != itself], model, known, _warn)
    hits = search.rank(signature, found, count)
    if as_json:
        click.echo(json.dumps([{"path": h.path, "score": h.score} for h in hits]))
    else:
        for hit in hits:
            click.echo(f"{hit.score:.4f}  {hit.path}")
    cached = len(found.records) - found.read
    click.echo(f"ddncodec: searched {len(found.records)} files: {cached} from the index, {_read_note(found)}", err=True)


@main.command()
@_library
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False), help="The index file.")
@_model
@click.option("-f", "--force", is_flag=True, help="Replace OUTPUT whatever it holds, reading every file again.")
def index(library: tuple[Path, ...], output: Path, model: str, force: bool) -> None:
    """Write the signatures of LIBRARY's .ddn files (files or folders) to an index for
    `ddncodec similar --index`. Run again, it reads only the files that are new or have
    changed since, and drops those that are gone; one that cannot be read is skipped
    with a warning. An OUTPUT that is not an index is refused unless --force."""
    from ddncodec import similar as search

    if not library:
        msg = "name a LIBRARY of .ddn files or folders"
        raise click.UsageError(msg)
    known = {}
    if os.path.lexists(output) and not force:
        try:
            known = search.load_index(output)
        except search.StaleIndexError:
            click.echo(f"ddncodec: {output}: an index of another ddncodec version: rebuilding it", err=True)
        except DDNError as exc:
            msg = f"{exc} (--force replaces it)"
            raise type(exc)(msg) from exc
    found = search.survey(_files(library), model, known, _warn)
    search.save_index(output, found.records)
    click.echo(f"ddncodec: {output}: {len(found.records)} files, {_read_note(found)}", err=True)
