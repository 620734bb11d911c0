"""After ``import ddncodec``, Pillow opens and saves .ddn files."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import ddncodec
from ddncodec import codec, pillow_plugin
from ddncodec.modelfile import CodecModel


@pytest.fixture(autouse=True)
def use_tiny_model(tiny_model: CodecModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pillow_plugin, "MODEL", tiny_model)


def test_open_decodes_exactly_what_the_codec_decodes(tiny_model: CodecModel, kodak_crop: Path, tmp_path: Path) -> None:
    data = ddncodec.encode(kodak_crop, 6, model=tiny_model)
    path = tmp_path / "x.ddn"
    path.write_bytes(data)
    with Image.open(path) as image:
        assert image.format == "DDN"
        assert (image.size, image.mode) == ((256, 192), "RGB")
        assert image.info["ddn_layers"] == codec.ladder(tiny_model)[5].layers
        pixels = np.asarray(image)
    assert np.array_equal(pixels, codec.decode_pixels(data, tiny_model)[0])


def test_open_reads_the_header_only(kodak_crop: Path, tiny_model: CodecModel, monkeypatch: pytest.MonkeyPatch) -> None:
    data = ddncodec.encode(kodak_crop, 8, model=tiny_model)

    def fail(*_args: object, **_kwargs: object) -> None:
        msg = "decode ran in _open"
        raise AssertionError(msg)

    monkeypatch.setattr(codec, "decode", fail)
    image = Image.open(io.BytesIO(data))
    assert image.size == (256, 192)
    with pytest.raises(AssertionError, match="decode ran"):
        image.load()


def test_save_encodes_with_encoderinfo_options(kodak_crop: Path, tiny_model: CodecModel, tmp_path: Path) -> None:
    path = tmp_path / "out.ddn"
    Image.open(kodak_crop).save(path, layers=1)
    assert path.read_bytes() == ddncodec.encode(kodak_crop, layers=1, model=tiny_model)
    Image.open(kodak_crop).convert("L").save(path, quality=8)
    with Image.open(path) as image:
        assert image.mode == "L"
        image.load()
    buffer = io.BytesIO()
    Image.open(kodak_crop).save(buffer, format="DDN", quality=1)
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (256, 192)


def test_failed_save_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "clear.ddn"
    with pytest.raises(ddncodec.InputError, match="transparency"):
        Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert not path.exists()


def test_registration() -> None:
    assert Image.registered_extensions()[".ddn"] == "DDN"
    assert Image.MIME["DDN"] == "image/x-ddn"


def test_bad_files(kodak_crop: Path, tiny_model: CodecModel) -> None:
    """Pillow's conventions: a bad header is "cannot identify image file" (the plugin's
    SyntaxError, caused by the ddncodec error), bad streams an OSError on load."""
    data = ddncodec.encode(kodak_crop, 8, model=tiny_model)
    for bad in (data[:12], b"XX" + data[2:]):
        with pytest.raises(UnidentifiedImageError, match="cannot identify image file"):
            Image.open(io.BytesIO(bad))
    with pytest.raises(SyntaxError, match="truncated") as refused:
        pillow_plugin.DdnImageFile(io.BytesIO(data[:12]))
    assert isinstance(refused.value.__cause__, ddncodec.FormatError)
    broken = Image.open(io.BytesIO(data[:-3]))  # the header is intact: the damage shows on load
    assert broken.size == (256, 192)
    with pytest.raises(OSError, match="truncated") as failed:
        broken.load()
    assert isinstance(failed.value.__cause__, ddncodec.FormatError)


def test_import_is_cheap_and_registers_the_plugin() -> None:
    """``import ddncodec`` must not pull in torch (nor load a model)."""
    code = "import sys, ddncodec; from PIL import Image; print('torch' in sys.modules, Image.EXTENSION['.ddn'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "DDN"]
