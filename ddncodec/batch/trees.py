"""Folder to folder: the inputs a batch finds in files, folders and ``@list.txt`` files,
each placed in the output folder as it sits in its source, coded resumably through the
folder's manifest."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from ddncodec.atomic import write_atomically
from ddncodec.batch.coder import Coded, Coder, Item, Settings
from ddncodec.batch.driver import Summary, run
from ddncodec.batch.engines import import_ray
from ddncodec.batch.manifest import Manifest
from ddncodec.container import DEFAULT_MAX_PIXELS
from ddncodec.errors import OptionError

if TYPE_CHECKING:
    from ddncodec.modelfile import CodecModel


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
        import_ray()
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
