"""Photo-sized work: any worker count gives the same bytes and pixels, memory grows with the
image only by a few bytes per pixel, progress is reported, and ``Codec`` keeps a model loaded."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ddncodec
from ddncodec import codec, container
from ddncodec.codec import decoder, detail_filter, tiles
from ddncodec.codec.workers import ahead
from ddncodec.errors import InputError
from ddncodec.modelfile import CodecModel, load

DATA = Path(__file__).parent / "data"
DETAIL_RUNG = [3, 0.0, 40]  # the tiny model's walk, then a detail layer at the step its detail filter was fitted at


@pytest.fixture(scope="module")
def detailed() -> CodecModel:
    """The test model with a detail filter, every quality a detail rung."""
    return load(DATA / "tiny-detailfilter.safetensors").replace(ladder=[DETAIL_RUNG] * 8)


@pytest.fixture()
def photo() -> Image.Image:
    """The 256x192 crop the test model's detail filter was fitted to (so the encoder runs it)."""
    with Image.open(DATA / "kodak" / "kodim23_crop.png") as image:
        return image.convert("RGB").crop((0, 0, 250, 180))  # ragged tiles and pieces


@pytest.fixture()
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """64 px tiles and 48 px detail-filter pieces: (tiles, pieces) of ``photo``."""
    monkeypatch.setattr(tiles, "TILE", 64)
    monkeypatch.setattr(detail_filter, "DETAIL_STRIP", 48)
    return 4 * 3, 6 * 4


@pytest.mark.parametrize("options", [{"quality": 5}, {"layers": 2}, {"bpp": 1.0}])
def test_worker_counts_change_neither_bytes_nor_pixels(
    detailed: CodecModel, photo: Image.Image, small_pieces: tuple[int, int], options: dict
) -> None:
    files = {threads: codec.encode(photo, detailed, threads=threads, **options) for threads in (1, 2, 3)}
    assert len({f.data for f in files.values()}) == 1
    assert all(np.array_equal(f.pixels, files[1].pixels) for f in files.values())
    for threads in (1, 3):
        assert np.array_equal(codec.decode_pixels(files[1].data, detailed, threads=threads)[0], files[1].pixels)
    if "quality" in options:  # the detail rung: its filter ran, piece by piece
        assert container.unpack(files[1].data).header.detail_filtered


@pytest.mark.parametrize("budget", [1, 1 << 30])
def test_detail_levels_decoded_during_the_walk_change_no_pixel(
    detailed: CodecModel, photo: Image.Image, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On several workers the detail stream is decoded while the walk runs, up to a budget:
    one band of three here (the rest after the walk), or all of it."""
    monkeypatch.setattr(decoder, "DETAIL_AHEAD", budget)
    encoded = codec.encode(photo, detailed, 5, threads=1)
    assert np.array_equal(codec.decode_pixels(encoded.data, detailed, threads=2)[0], encoded.pixels)


def test_items_drawn_ahead_stop_at_the_budget_and_come_in_order() -> None:
    drawn: list[int] = []

    def items():
        for i in range(10):
            drawn.append(i)
            yield i

    with codec.workers(2):
        later = ahead(items(), budget=3, size=lambda _: 1)
        deadline = time.monotonic() + 10
        while len(drawn) < 3 and time.monotonic() < deadline:  # the worker draws while this thread waits
            time.sleep(0.001)
        assert drawn == [0, 1, 2]
        assert list(later) == list(range(10))
    with codec.workers(1):
        assert list(ahead(iter("abc"), budget=1, size=len)) == ["a", "b", "c"]


def test_an_error_drawing_ahead_is_raised_where_the_items_are_taken() -> None:
    def items():
        yield 1
        msg = "corrupt"
        raise ValueError(msg)

    with codec.workers(2):
        later = ahead(items(), budget=10, size=lambda _: 1)
        with pytest.raises(ValueError, match="corrupt"):
            list(later)


def _peak(work) -> int:
    """Peak bytes numpy (and Python) allocate during ``work()``."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_with_the_image_by_a_few_bytes_per_pixel(detailed: CodecModel) -> None:
    """Tiles, bands and pieces bound the working set: past a fixed part, a 4x larger image
    costs at most these bytes more per added pixel (the image and its copies, the int16
    detail levels, and the detail bands, which span the width, on two workers; the
    format's old coder kept 32 float64 odds per coefficient, over 700 bytes per pixel).
    torch's per-tile tensors are bounded by the tile."""
    encode_bound, decode_bound = 48, 32
    source = np.asarray(Image.open(DATA / "kodak" / "kodim23_crop.png").convert("RGB"))
    peaks, sizes = [], []
    for repeat in (2, 4):
        image = Image.fromarray(np.tile(source, (repeat, repeat, 1)))
        encoded: list[codec.Encoded] = []
        encode_peak = _peak(lambda image=image, out=encoded: out.append(codec.encode(image, detailed, 5, threads=2)))
        decode_peak = _peak(lambda data=encoded[0].data: codec.decode_pixels(data, detailed, threads=2))
        peaks.append((encode_peak, decode_peak))
        sizes.append(image.width * image.height)
    added = sizes[1] - sizes[0]
    assert (peaks[1][0] - peaks[0][0]) / added < encode_bound
    assert (peaks[1][1] - peaks[0][1]) / added < decode_bound


def test_progress_counts_every_tile_and_piece(
    detailed: CodecModel, photo: Image.Image, small_pieces: tuple[int, int]
) -> None:
    tiles, pieces = small_pieces
    seen: list[tuple[int, int | None]] = []
    encoded = codec.encode(photo, detailed, 5, threads=2, progress=lambda done, total: seen.append((done, total)))
    assert detailed.postfilter is None  # else the encoder filters each tile once more, apart from its walk
    total = tiles + pieces
    assert seen == [(done, total) for done in range(1, total + 1)]
    seen.clear()
    codec.decode(encoded.data, detailed, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(done, total) for done in range(1, total + 1)]


def test_the_codec_object_keeps_its_model_and_takes_arrays_and_paths(
    tiny_model_path: Path, photo: Image.Image, tmp_path: Path
) -> None:
    keeper = ddncodec.Codec(tiny_model_path, threads=1)
    pixels = np.asarray(photo)
    data = keeper.encode(pixels, 8)
    assert data == ddncodec.encode(photo, 8, model=tiny_model_path, threads=2)
    path = tmp_path / "photo.ddn"
    path.write_bytes(data)
    decoded = np.asarray(keeper.decode(path))
    assert decoded.shape == pixels.shape and np.array_equal(decoded, np.asarray(keeper.decode(data)))
    assert np.array_equal(decoded, codec.encode(photo, keeper.model, 8).pixels)  # the encoder's reconstruction
    gray = keeper.decode(keeper.encode(pixels[..., 0]))
    assert gray.mode == "L" and gray.size == photo.size
    with pytest.raises(InputError, match="uint8"):
        keeper.encode(pixels.astype(np.float32))
