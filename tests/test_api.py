"""The Python API's answers to what a new user hands it: paths as str or Path, bytes-like
data, and wrong values described (type, shape, dtype), never printed whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddncodec
from ddncodec.errors import InputError


@pytest.fixture()
def keeper(tiny_model_path: Path) -> ddncodec.Codec:
    return ddncodec.Codec(tiny_model_path, threads=1)


def test_decode_takes_a_path_as_str_or_path_and_bytes_of_any_kind(
    keeper: ddncodec.Codec, tiny_model_path: Path, kodak_crop: Path, tmp_path: Path
) -> None:
    data = keeper.encode(kodak_crop, 1)
    ddn = tmp_path / "photo.ddn"
    ddn.write_bytes(data)
    expected = np.asarray(keeper.decode(data))
    assert expected.shape == (192, 256, 3)
    for source in (str(ddn), ddn, bytearray(data), memoryview(data)):
        assert np.array_equal(np.asarray(ddncodec.decode(source, model=tiny_model_path, threads=1)), expected)
    with pytest.raises(TypeError, match=r"^a \.ddn file must be given as its bytes or its path, not int$"):
        keeper.decode(42)


def test_encode_takes_the_bytes_of_an_image_file_of_any_kind(keeper: ddncodec.Codec, kodak_crop: Path) -> None:
    data = kodak_crop.read_bytes()
    assert keeper.encode(bytearray(data), 1) == keeper.encode(memoryview(data), 1) == keeper.encode(data, 1)


@pytest.mark.parametrize(
    ("image", "error", "described"),
    [
        (np.full((600, 800), 0.25, np.float32), InputError, "numpy.ndarray of shape (600, 800), dtype float32"),
        (np.zeros((3, 600, 800), np.uint8), InputError, "numpy.ndarray of shape (3, 600, 800), dtype uint8"),
        (
            torch.zeros(600, 800, 3, dtype=torch.uint8),
            TypeError,
            "torch.Tensor of shape (600, 800, 3), dtype torch.uint8",
        ),
        (np.zeros((600, 800, 3), np.uint8).tolist(), TypeError, "list of length 600"),
        (None, TypeError, "NoneType"),
    ],
)
def test_a_wrong_image_is_described_not_printed(
    keeper: ddncodec.Codec, image: object, error: type, described: str
) -> None:
    """Printing a 600x800 array (or its str()) gave megabytes of message; the description is one short line."""
    with pytest.raises(error) as raised:
        keeper.encode(image)
    message = str(raised.value)
    assert message.endswith(described), message
    assert len(message) < 160 and "\n" not in message and "0.25" not in message and "[0" not in message


def test_a_uint8_array_is_coded_as_its_pillow_image(keeper: ddncodec.Codec, kodak_crop: Path) -> None:
    photo = Image.open(kodak_crop).convert("RGB")
    assert keeper.encode(np.asarray(photo), 1) == keeper.encode(photo, 1)
