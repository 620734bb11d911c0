"""Smooth blocks: flat colour and ramps come back exact or within a level, for a few bytes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ddncodec import codec, container, entropy, smooth
from ddncodec.errors import FormatError, OptionError
from ddncodec.modelfile import CodecModel


def flat(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = colour
    return pixels


def ramp(width: int, height: int) -> np.ndarray:
    """A horizontal gray ramp from 0 to 255."""
    row = np.linspace(0, 255, width).round().astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)


def round_trip(planes: smooth.Planes) -> smooth.Planes:
    writer = entropy.Writer()
    smooth.write(planes, writer)
    return smooth.read(entropy.Decoder(writer.finish()), *planes.smooth.shape)


def test_a_flat_colour_and_a_ramp_are_found_and_painted_within_the_tolerance() -> None:
    for pixels, worst in ((flat(61, 45, (200, 30, 40)), 0), (ramp(200, 40), smooth.TOLERANCE)):
        planes = smooth.find(pixels)
        assert planes.smooth.all()  # the ragged last row and column too
        painted = np.zeros_like(pixels)
        smooth.paint(painted, round_trip(planes))
        assert np.abs(painted.astype(int) - pixels).max() <= worst


def test_texture_is_not_smooth_and_the_planes_survive_the_stream() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    pixels[:32, :48] = (10, 120, 250)  # one flat quarter: 4 x 6 blocks
    planes = smooth.find(pixels)
    assert planes.smooth.sum() == 24 and planes.smooth[:4, :6].all()
    back = round_trip(planes)
    assert np.array_equal(back.smooth, planes.smooth) and np.array_equal(back.params, planes.params)
    assert not round_trip(smooth.Planes.none(3, 5)).smooth.any()


def test_a_plane_out_of_range_is_a_format_error() -> None:
    planes = smooth.find(flat(16, 8, (255, 255, 255)))
    planes.params[1, 0, 0] = 1100  # four times the mean may be at most 1020
    with pytest.raises(FormatError, match="smooth block"):
        round_trip(planes)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 5), (300, 200)])
def test_a_flat_image_at_a_detail_rung_is_exact_and_small(tiny_model: CodecModel, width: int, height: int) -> None:
    detailed = tiny_model.replace(ladder=[[3, 0.0, 40]] * 8)
    pixels = flat(width, height, (200, 30, 40))
    encoded = codec.encode(Image.fromarray(pixels), detailed, 5)
    assert encoded.data[3] == container.PAINTED_VERSION  # no layer: the planes are all there is
    assert container.unpack(encoded.data).header.layers == 0
    assert len(encoded.data) < 100, len(encoded.data)
    assert np.array_equal(np.asarray(codec.decode(encoded.data, detailed)), pixels)
    assert np.array_equal(encoded.pixels, pixels)
    with pytest.raises(OptionError, match="no layers to cut at"):
        codec.decode(encoded.data, detailed, layers=1)


def test_a_flat_image_at_a_rung_without_detail_is_its_planes_alone_unless_layers_are_asked(
    tiny_model: CodecModel,
) -> None:
    pixels = flat(300, 200, (200, 30, 40))
    assert all(rung.detail == 0 for rung in codec.ladder(tiny_model))  # the test model's ladder is plain
    for quality in (1, 8):
        encoded = codec.encode(Image.fromarray(pixels), tiny_model, quality)
        header = container.unpack(encoded.data).header
        assert (encoded.data[3], header.layers, header.detail_step) == (
            container.PAINTED_VERSION,
            0,
            smooth.PAINTED_STEP,
        )
        assert len(encoded.data) < 100, len(encoded.data)
        assert np.array_equal(np.asarray(codec.decode(encoded.data, tiny_model)), pixels)
    walked = codec.encode(Image.fromarray(pixels), tiny_model, layers=2)  # asked for: a walk, as before
    assert container.unpack(walked.data).header.layers == 2
    photo = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert smooth.whole(photo) is None and smooth.whole(flat(64, 200, (9, 9, 9))) is not None


def test_flat_parts_of_a_photo_cost_no_levels_and_decode_as_encoded(tiny_model: CodecModel) -> None:
    detailed = tiny_model.replace(ladder=[[3, 0.0, 12]] * 8)
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    half = photo.copy()
    half[:, :32] = (90, 90, 90)
    sizes = [len(codec.encode(Image.fromarray(p), detailed, 8).data) for p in (photo, half)]
    assert sizes[1] < 0.7 * sizes[0], sizes
    encoded = codec.encode(Image.fromarray(half), detailed, 8)
    decoded = np.asarray(codec.decode(encoded.data, detailed))
    assert np.array_equal(decoded, encoded.pixels)
    assert np.array_equal(decoded[:, :32], half[:, :32])
