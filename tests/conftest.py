"""Shared fixtures: a committed tiny DDN trained for a few seconds on BSDS crops, so codec
tests run against a real (if weak) model without depending on the shipped one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ddncodec import postfilter
from ddncodec.modelfile import CodecModel, load

DATA = Path(__file__).parent / "data"
TINY_MODEL = DATA / "tiny.safetensors"


@pytest.fixture(params=[False, True], ids=["float32", "bfloat16"])
def filter_precision(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The filters' trunks in float32, then in bfloat16, whatever this CPU has
    (``postfilter.bfloat16_native``; a CPU without it emulates bfloat16): whether in bfloat16."""
    monkeypatch.setattr(postfilter, "bfloat16_native", lambda: request.param)
    return request.param


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test, so that runs in this process and in subprocesses
    do the same arithmetic (and the toy trains at the same speed everywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model() -> CodecModel:
    """The committed test model (tests/data/make_tiny_model.py): the 'tiny' config trained
    for 150 steps on 64px crops of the BSDS test images."""
    return load(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model: CodecModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    tiny_model.save(path)
    return path


@pytest.fixture()
def kodak_crop() -> Path:
    """A 256x192 crop of kodim23 (evaluation data: used to test, never to train)."""
    return DATA / "kodak" / "kodim23_crop.png"


@pytest.fixture()
def no_colour_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder without colour corrections (format version 10): for tests of what comes
    before them (tiles, prefixes, the detail layer and its filter), which the corrections,
    fitted to the whole file, would change."""
    from ddncodec.codec import encoder

    monkeypatch.setattr(encoder, "colour_corrected", lambda *_args, **_kwargs: None)
