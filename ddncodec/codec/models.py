"""Which model codes a file: loaded once per file version, found by fingerprint, and its ladder."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ddncodec import container
from ddncodec.codec.workers import torch_threads
from ddncodec.errors import FormatError
from ddncodec.ladder import Rung
from ddncodec.ladder import fallback as fallback_ladder
from ddncodec.modelfile import CodecModel, load, named_models, resolve

ModelSpec = CodecModel | str | os.PathLike
MODELS_KEPT = 2  # a new default beside the one before it is the common case

_loaded: dict[tuple[Path, int, int], CodecModel] = {}


def load_model(spec: ModelSpec = "default") -> CodecModel:
    """A model object as is, or a name/path loaded once per file version (path, mtime, size)."""
    if isinstance(spec, CodecModel):
        return spec
    path = resolve(spec).resolve()
    try:
        stat = path.stat()
    except OSError:
        return load(path)  # raises the ModelError that names the missing file
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        if len(_loaded) >= MODELS_KEPT:
            del _loaded[next(iter(_loaded))]
        with torch_threads(1):  # hundreds of small tensor ops: on a busy machine, threads only wait on each other
            _loaded[key] = load(path)
    return _loaded[key]


def model_for(header: container.Header, spec: ModelSpec) -> CodecModel:
    """The model a file needs: ``spec`` if the file carries its fingerprint; else, if
    ``spec`` is a named model (the default, say), the named model that made the file, so
    the files of an earlier default still decode after a new one ships."""
    model = load_model(spec)
    if header.fingerprint == model.file_fingerprint(header.detail_filtered):
        return model
    named = named_models()
    if model.origin in named:
        for path in named:
            other = load_model(path)
            if header.fingerprint == other.file_fingerprint(header.detail_filtered):
                return other
    expected = model.file_fingerprint(header.detail_filtered)
    msg = (
        f"this .ddn file was made with another model (fingerprint {header.fingerprint.hex()}); "
        f"the model in use is {expected.hex()}; decode it with the model that made it"
    )
    raise FormatError(msg)


def ladder(model: CodecModel) -> tuple[Rung, ...]:
    """The model's own ladder (tuned on validation data) or the fallback."""
    return model.ladder or fallback_ladder(len(model.config.layers))


def table_set(model: CodecModel, rung: Rung) -> int:
    """The entropy table set for ``rung``: the set of the first ladder rung that walks the
    same layers at the same λ, else of the rung nearest in log(1 + λ), then in layers.
    The detail step changes no index, so it never picks a set: ``tune`` counts rungs that
    differ only there alike, and a ladder whose detail rungs walk another rung's path (q1's,
    say) codes that walk with that rung's tables."""
    rungs = ladder(model)[: model.priors.sets]
    if len(rungs) < model.priors.sets or model.priors.sets == 1:
        return 0
    return min(
        range(len(rungs)),
        key=lambda i: (abs(math.log1p(rungs[i].lam) - math.log1p(rung.lam)), abs(rungs[i].layers - rung.layers)),
    )
