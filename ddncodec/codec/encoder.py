"""The encoder chain at one rung: walk -> index maps -> streams, post-filter on or off, detail layer.

``code`` walks the image and entropy-codes the index maps; ``finish`` decides the
post-filter (by PSNR: it rarely hurts, but at the top rungs it can) and adds the rung's
detail layer, whose own filter is decided the same way. The file's post-filter flag
changes no other byte, so the rate searches (``rate``) code many walks and finish one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ddncodec import colour, container, detail, entropy, imageio, smooth
from ddncodec import levels as level_coding
from ddncodec.codec import workers
from ddncodec.codec.choosing import LOOKAHEAD_LAMBDA, rate_aware
from ddncodec.codec.detail_filter import detail_filtered
from ddncodec.codec.maps import IndexMaps, write_maps
from ddncodec.codec.models import table_set
from ddncodec.codec.tiles import Filtering, Tile, Walked, plan, post_filtered, walk
from ddncodec.ladder import Rung
from ddncodec.metrics import psnr
from ddncodec.model import Chooser
from ddncodec.modelfile import CodecModel
from ddncodec.tensors import to_tensor


@dataclass
class Encoded:
    """A .ddn file and what the encoder knows about it."""

    data: bytes
    pixels: np.ndarray  # (H, W, 3) uint8: the reconstruction, exactly what decode returns
    mode: str
    psnr: float  # of the reconstruction against the input, in the output mode
    rung: Rung
    frames: int = 1  # frames in the input file; only the first is coded

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, header and checksum included."""
        return 8 * len(self.data) / (self.width * self.height)

    def image(self) -> Image.Image:
        return imageio.from_pixels(self.pixels, self.mode)


@dataclass(frozen=True)
class DetailStream:
    """A detail layer as a file holds it."""

    data: bytes
    step: int  # its quantiser step
    filtered: bool  # decoded through the model's detail filter (the encoder's choice: where it helps)


NO_DETAIL = DetailStream(b"", 0, False)  # a file without a detail layer (step 0)


@dataclass
class Coded:
    """One encoder walk at one rung, entropy-coded: all of the file but the post-filter
    flag, which changes no other byte (so a rate search can leave the filter out)."""

    rung: Rung
    maps: IndexMaps
    walked: Walked
    written: Callable[[], list[bytes]]  # the layer streams, when written (``workers.aside``)
    planes: smooth.Planes | None = None  # the smooth blocks, found where the rung has a detail layer

    @property
    def streams(self) -> list[bytes]:
        return self.written()

    def data(
        self,
        model: CodecModel,
        mode: str,
        filtered: bool,
        details: DetailStream = NO_DETAIL,
        correction: bytes = b"",
        walk_correction: bytes = b"",
    ) -> bytes:
        """The file, with its detail layer (if it has one) and the colour corrections of
        the decode (``correction``) and of the walk before the detail layer."""
        lengths = tuple(len(s) for s in self.streams)
        step = details.step
        newest_detail = bool(step and lengths)  # format version 11's levels: summarised, predicted, DC signs
        fingerprint = model.file_fingerprint(details.filtered)
        header = container.Header(
            fingerprint,
            self.maps.width,
            self.maps.height,
            mode,
            self.maps.table_set,
            lengths,
            filtered,
            step,
            len(details.data),
            details.filtered,
            smooth_blocks=bool(step),
            summarised=newest_detail,
            predicted=newest_detail,
            colour=correction,
            walk_colour=walk_correction,
            dc_signs=newest_detail,
        )
        return container.pack(header, self.streams, details.data)


def _walk_rung(
    pixels: np.ndarray,
    model: CodecModel,
    rung: Rung,
    tables: int | None,
    effort: int,
    filtering: Filtering,
    planes: smooth.Planes | None = None,
) -> tuple[IndexMaps, Walked]:
    """Walk (H, W, 3) uint8 pixels at ``rung``, choosing with ``effort`` (``choosing.EFFORTS``)
    for table set ``tables`` (default: the rung's own); cells the smooth blocks of ``planes``
    paint over are priced by their bits alone."""
    height, width = pixels.shape[:2]
    unit = model.config.unit
    tiles = plan(width, height, unit)
    tables = table_set(model, rung) if tables is None else tables

    def chooser_for(i: int) -> Chooser:
        t = tiles[i]
        target = to_tensor(imageio.pad(pixels[t.top : t.top + t.height, t.left : t.left + t.width], unit)[None])
        painted = None if planes is None else _unseen_painted(smooth.painted_mask(planes, t.top, t.left, t.padded), t)
        if effort > 1:
            return rate_aware(
                target, model, rung.lam * LOOKAHEAD_LAMBDA, tables, lookahead=rung.layers, painted=painted
            )
        return rate_aware(target, model, rung.lam, tables, painted=painted)

    walked = walk(model, tiles, rung.layers, chooser_for, filtering)
    return IndexMaps(width, height, tables, walked.grids), walked


def _unseen_painted(painted: np.ndarray, t: Tile) -> np.ndarray:
    """``painted`` with the tile's padding marked too: no one sees those pixels, so the
    cells that hold nothing else cost their bits alone (a flat image's edge column, say)."""
    painted[t.height :] = True
    painted[:, t.width :] = True
    return painted


def encode_maps(
    pixels: np.ndarray, model: CodecModel, rung: Rung, tables: int | None = None, effort: int = 1
) -> IndexMaps:
    """The index maps the encoder chooses for (H, W, 3) uint8 pixels at ``rung``."""
    with workers.workers():
        return _walk_rung(pixels, model, rung, tables, effort, Filtering.NONE)[0]


def code(
    pixels: np.ndarray,
    model: CodecModel,
    rung: Rung,
    tables: int | None = None,
    effort: int = 1,
    planes: smooth.Planes | None = None,
) -> Coded:
    """Walk (H, W, 3) uint8 pixels at ``rung`` and entropy-code the index maps with table
    set ``tables`` (default: the rung's own), choosing with ``effort``; ``planes``: the
    image's smooth blocks if the caller has found them (else found here at a detail rung)."""
    filtering = Filtering.NONE if model.postfilter is None else Filtering.LATER
    if planes is None and rung.detail:
        planes = smooth.find(pixels, run=workers.bands)
    if planes is not None and planes.smooth.all():  # all painted over: no walk is as good (format version 7)
        rung, filtering = Rung(0, rung.lam, rung.detail), Filtering.NONE
    maps, walked = _walk_rung(pixels, model, rung, tables, effort, filtering, planes)
    # The layer streams are written on a worker while the filters run (a 12-megapixel photo
    # at q3: 1.6 s of serial entropy coding beside 1.2 s of post-filter).
    return Coded(rung, maps, walked, workers.aside(lambda: write_maps(maps, model)), planes)


def post_filter_choice(coded: Coded, pixels: np.ndarray, mode: str, model: CodecModel) -> tuple[np.ndarray, bool]:
    """What the decoder makes of a coded walk, and whether it runs the post-filter: the
    encoder's choice per file (it rarely hurts, but at the top rungs it can)."""
    walked = coded.walked
    if model.postfilter is None or not walked.kept:  # no filter, or already decided (``image`` is the choice)
        return walked.image, walked.filtered
    cleaned = post_filtered(model, walked)
    if psnr(cleaned, pixels, mode) > psnr(walked.image, pixels, mode):
        walked.image, walked.filtered = cleaned, True
    walked.kept = []  # the filter's inputs: no longer needed, and as large as the image
    return walked.image, walked.filtered


def with_detail(
    pixels: np.ndarray, mode: str, decoded: np.ndarray, step: int, model: CodecModel, planes: smooth.Planes
) -> tuple[DetailStream, np.ndarray]:
    """The detail layer at ``step`` for a decoded DDN image and the image it decodes to.
    The smooth blocks of ``planes`` are painted last and code no levels. A gray image's
    chroma is left alone: the decoder returns the mean of the channels."""
    levels = detail.residual_levels(pixels, decoded, step, run=workers.bands, skip=planes.smooth)
    if mode == "L":
        levels[1:] = 0
    stream = workers.aside(lambda: _detail_stream(planes, levels, step))  # coded while the filter runs
    image, filtered = detail.apply(decoded, levels, step, run=workers.bands, skip=planes.smooth), False
    candidates = [image]
    if model.detailfilter is not None and not planes.smooth.all():
        candidates.append(detail_filtered(model, image, detail.coded_blocks(levels), step))
    for candidate in candidates:
        smooth.paint(candidate, planes)
    if len(candidates) > 1 and psnr(candidates[1], pixels, mode) > psnr(image, pixels, mode):
        image, filtered = candidates[1], True
    return DetailStream(stream(), step, filtered), image


def _detail_stream(planes: smooth.Planes, levels: np.ndarray, step: int) -> bytes:
    """The detail stream: the smooth blocks, then the levels of the others (which it only reads)."""
    writer = entropy.Writer()
    smooth.write(planes, writer)
    level_coding.write(levels, writer, step, planes.smooth)
    return writer.finish()


def file(
    coded: Coded,
    pixels: np.ndarray,
    mode: str,
    model: CodecModel,
    decoded: np.ndarray,
    filtered: bool,
    step: int,
    walk_correction: bytes = b"",
) -> Encoded:
    """The file of a coded walk that decodes to ``decoded`` (through the walk's colour
    correction, ``corrected_walk``, if one is given), plus a detail layer at ``step`` (0: none)."""
    details = NO_DETAIL
    if step:
        assert coded.planes is not None  # ``code`` finds them for every rung with a detail step
        details, decoded = with_detail(pixels, mode, decoded, step, model, coded.planes)
    data = coded.data(model, mode, filtered, details, walk_correction=walk_correction)
    quality = psnr(decoded, pixels, mode)
    painted = coded.planes if step else None  # the decoder paints them with a detail stream only
    if coded.streams and (found := colour_corrected(pixels, mode, decoded, painted, len(data), quality)):
        correction, decoded, quality = found
        data = coded.data(model, mode, filtered, details, correction.to_bytes(), walk_correction)
    rung = Rung(coded.rung.layers, coded.rung.lam, step)
    return Encoded(data, decoded, mode, quality, rung)


def corrected_walk(coded: Coded, pixels: np.ndarray, mode: str, walked: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The walk's image as a detail layer starts from it, and the bytes of its colour
    correction (none where it does not bring the walk closer to the photo, or the file has
    no layers), fitted without the walk's smooth blocks, which the decoder paints at the end. It pays in the detail
    layer, which codes what it leaves: on wherever it helps the walk at all, 2.6 % off the
    BD-rate on bsds500/val (with the decode's); gated by the walk's own bytes, as the decode's
    is by the file's, 2.2 %."""
    found = colour_corrected(pixels, mode, walked, coded.planes, None, paint=False) if coded.streams else None
    return (walked, b"") if found is None else (found[1], found[0].to_bytes())


def colour_corrected(
    pixels: np.ndarray,
    mode: str,
    decoded: np.ndarray,
    planes: smooth.Planes | None,
    file_bytes: int | None,
    quality: float | None = None,
    paint: bool = True,
) -> tuple[colour.Correction, np.ndarray, float] | None:
    """The photo's colour correction for ``decoded`` (whose PSNR is ``quality``, if known), fitted
    without the smooth blocks of ``planes``, the image it gives (those blocks painted over it if
    ``paint``: not on the walk, whose are painted at the end) and that image's PSNR, where the
    gain pays for its bytes in a file of ``file_bytes`` (None: where it gains at all). RGB only:
    a gray image's chroma is not its own."""
    if mode != "RGB":
        return None
    quality = psnr(decoded, pixels, mode) if quality is None else quality
    correction = colour.fit(decoded, pixels, workers.bands, None if planes is None else planes.smooth)
    corrected = decoded.copy()
    correction.apply(corrected, run=workers.bands)
    if planes is not None and paint:
        smooth.paint(corrected, planes)  # painted last, as the decoder does: they stay exact
    better = psnr(corrected, pixels, mode)
    pays = better > quality if file_bytes is None else colour.worth_it(better - quality, file_bytes)
    return (correction, corrected, better) if pays else None


def finish(coded: Coded, pixels: np.ndarray, mode: str, model: CodecModel) -> Encoded:
    """The file of a coded walk: post-filter on if it helps, then the rung's detail layer."""
    decoded, filtered = post_filter_choice(coded, pixels, mode, model)
    walk_correction = b""
    if coded.rung.detail:
        decoded, walk_correction = corrected_walk(coded, pixels, mode, decoded)
    return file(coded, pixels, mode, model, decoded, filtered, coded.rung.detail, walk_correction)


def encode_pixels(
    pixels: np.ndarray,
    mode: str,
    model: CodecModel,
    rung: Rung,
    tables: int | None = None,
    effort: int = 1,
    planes: smooth.Planes | None = None,
) -> Encoded:
    """Encode (H, W, 3) uint8 pixels at one rung: the core of every encode. ``tables``
    overrides the rung's own entropy table set (``models.table_set``); ``effort`` is one of
    ``choosing.EFFORTS``; ``planes`` as for ``code``."""
    return finish(code(pixels, model, rung, tables, effort, planes), pixels, mode, model)
