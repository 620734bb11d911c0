"""The per-cell DDN image generator: coarse-to-fine layers, each choosing one of K
candidates independently for every cell of its grid.

Data path of one layer ``l`` (x is the reconstruction so far, gray = 0)::

    h, x ──► h' = adapt(h) + embed(unshuffle(x)) ──► residual blocks ──► h_l
    h_l ──► DDL head (K-1 nodes) ──► pixel-shuffle ──► bilinear ×out_stride ──► K-1 residuals
    candidates = [x (the "keep" symbol 0), x + residual_1, …, x + residual_{K-1}]   (B, K, 3, H, W)
    choose one candidate per cell (cell×cell px) ──► x_l

Encoding chooses per cell the candidate nearest the image (or a rate-aware cost),
decoding replays the stored choices; sampling and zero-shot guidance only change the
chooser, never the network. The network is fully convolutional and uses per-pixel
channel normalisation only, so a reconstruction never depends on the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddncodec.ddl import DiscreteDistributionLayer
from ddncodec.tensors import unshuffled_channels_last

MAX_LAYERS = 255  # the .ddn header's layer count is one byte
MAX_CELL = 256  # px; also bounds the padding unit (the lcm of the cells)
MAX_K = 4096
MAX_CHANNELS = 1024
MAX_BLOCKS = 64


@dataclass(frozen=True)
class LayerSpec:
    """One DDN layer: its cell grid, alphabet and the trunk that shapes its candidates."""

    cell: int  # px per side of a cell; each cell picks one candidate
    k: int  # symbols per cell, symbol 0 = keep (zero residual)
    stride: int  # px per feature position of this layer's trunk
    channels: int  # trunk width
    blocks: int  # residual blocks before the head
    out_stride: int  # px per residual sample before bilinear upsampling (1 = full resolution)


def _check_layer_sizes(index: int, spec: LayerSpec) -> None:
    """Integers that fit together: the trunk's stride divides the cell, the residual's divides the trunk's."""
    integers = all(isinstance(v, int) and not isinstance(v, bool) for v in dataclasses.astuple(spec))
    if not (
        integers
        and min(spec.cell, spec.stride, spec.out_stride, spec.channels) > 0
        and spec.k >= 2
        and spec.stride % spec.out_stride == 0
        and spec.cell % spec.stride == 0
        and spec.blocks >= 0
    ):
        msg = (
            f"layer {index}: need integers, k >= 2, sizes > 0, stride % out_stride == 0, cell % stride == 0; got {spec}"
        )
        raise ValueError(msg)


def _check_layer_limits(index: int, spec: LayerSpec) -> None:
    """Sane maxima, checked before anything is built: a model file is input too."""
    if spec.cell > MAX_CELL or spec.k > MAX_K or spec.channels > MAX_CHANNELS or spec.blocks > MAX_BLOCKS:
        msg = f"layer {index}: over the limits (cell <= {MAX_CELL}, k <= {MAX_K}, channels <= {MAX_CHANNELS}, blocks <= {MAX_BLOCKS}); got {spec}"
        raise ValueError(msg)


def _check_layer_count(layers: tuple[LayerSpec, ...]) -> None:
    """At least one layer, and no more than the header's layer byte can count."""
    if not layers:
        msg = "a DDN needs at least one layer"
        raise ValueError(msg)
    if len(layers) > MAX_LAYERS:
        msg = f"a DDN has at most {MAX_LAYERS} layers, got {len(layers)}"
        raise ValueError(msg)


def _check_chain_dropout(dropout: object) -> None:
    """A probability, given as a number: a bool or a string in a model file is refused, not coerced."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
        msg = f"chain_dropout must be a probability, got {dropout!r}"
        raise ValueError(msg)


@dataclass(frozen=True)
class DDNConfig:
    """Everything needed to rebuild the network; saved inside every model file."""

    layers: tuple[LayerSpec, ...]
    chain_dropout: float = 0.05  # probability, per layer and step, of a random choice

    def __post_init__(self) -> None:
        layers = tuple(s if isinstance(s, LayerSpec) else LayerSpec(**s) for s in self.layers)
        object.__setattr__(self, "layers", layers)
        _check_layer_count(layers)
        for index, spec in enumerate(layers):
            _check_layer_sizes(index, spec)
            _check_layer_limits(index, spec)
        if self.unit > MAX_CELL:
            msg = f"the cells' least common multiple is {self.unit} px, over {MAX_CELL}"
            raise ValueError(msg)
        _check_chain_dropout(self.chain_dropout)

    @property
    def unit(self) -> int:
        """Images are padded to a multiple of this many px."""
        return int(np.lcm.reduce([s.cell for s in self.layers]))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DDNConfig:
        return cls(**json.loads(text))


def _spec(cell: int, k: int, stride: int, channels: int, blocks: int, out_stride: int) -> LayerSpec:
    return LayerSpec(cell, k, stride, channels, blocks, out_stride)


CONFIGS: dict[str, DDNConfig] = {
    # Unit-test size: trains in seconds.
    "tiny": DDNConfig(
        layers=(
            _spec(16, 8, 8, 16, 1, 4),
            _spec(8, 8, 4, 16, 1, 1),
            _spec(4, 8, 4, 16, 1, 1),
        )
    ),
    # The shipped default: coarse cells with large alphabets first (cheap bits that
    # the network can predict), fine cells last.
    "base": DDNConfig(
        layers=(
            *[_spec(32, 64, 16, 96, 1, 8)] * 3,
            *[_spec(16, 32, 8, 96, 1, 4)] * 4,
            *[_spec(8, 16, 4, 80, 1, 1)] * 4,
            *[_spec(4, 16, 4, 80, 1, 1)] * 2,
        )
    ),
}
# "base" grown by five finer-detail layers (trained with --grow-from base, --train-from 13):
# the ladder keeps rising past 13 layers.
CONFIGS["base18"] = DDNConfig(layers=(*CONFIGS["base"].layers, *[_spec(4, 16, 4, 80, 2, 1)] * 5))
# ... and by five more (--grow-from base18, --train-from 18).
CONFIGS["base23"] = DDNConfig(layers=(*CONFIGS["base18"].layers, *[_spec(4, 16, 4, 80, 2, 1)] * 5))
# ... and by three more (--grow-from base23, --train-from 23).
CONFIGS["base26"] = DDNConfig(layers=(*CONFIGS["base23"].layers, *[_spec(4, 16, 4, 80, 2, 1)] * 3))


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every pixel: per sample and per position, so tiles,
    batches and image sizes never change a reconstruction."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        last = x.permute(0, 2, 3, 1)  # a view without copying on the channels-last trunk
        out = F.layer_norm(last, (channels,), self.weight.view(channels), self.bias.view(channels), 1e-6)
        return out.permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class CellLayer(nn.Module):
    """One coarse-to-fine step: K candidate images, one choice per cell."""

    def __init__(self, spec: LayerSpec, prev: LayerSpec | None) -> None:
        super().__init__()
        self.spec = spec
        self.adapt = None
        if prev is not None and (prev.stride, prev.channels) != (spec.stride, spec.channels):
            self.adapt = nn.Conv2d(prev.channels, spec.channels, 1)
        self.embed = nn.Conv2d(3 * spec.stride**2, spec.channels, 1)
        self.blocks = nn.Sequential(*[ResBlock(spec.channels) for _ in range(spec.blocks)])
        sub = spec.stride // spec.out_stride
        self.head_norm = ChannelNorm(spec.channels)  # the trunk's stream grows; heads read it normalised
        self.ddl = DiscreteDistributionLayer(spec.channels, spec.k - 1, 3 * sub * sub)

    def features(self, h: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        s = self.spec.stride
        feat = self.embed(unshuffled_channels_last(x, s))
        if h is not None:
            if h.shape[-1] != feat.shape[-1]:
                h = F.interpolate(h, size=feat.shape[-2:], mode="nearest")
            feat = feat + (self.adapt(h) if self.adapt is not None else h)
        return self.blocks(feat)

    def candidates(self, h: torch.Tensor, base: torch.Tensor) -> Candidates:
        return Candidates(base, self.head_norm(h), self.ddl, self.spec, h)


@dataclass
class Candidates:
    """The K options of one layer for every cell: symbol 0 keeps ``base``, symbol k adds
    head k's residual. Residuals live at the trunk's stride, unshuffled:
    (B, K-1, 3*(stride/out_stride)^2, H/stride, W/stride); a composed residual is
    pixel-shuffled to 1/out_stride resolution and bilinearly upsampled to full size.
    All K-1 residuals are computed only when asked for (``cost``, ``images``): composing
    a choice, all a decoder does, computes the chosen ones alone."""

    base: torch.Tensor  # (B, 3, H, W), the image so far
    features: torch.Tensor  # (B, C, H/stride, W/stride), what the heads read
    ddl: DiscreteDistributionLayer
    spec: LayerSpec
    trunk: torch.Tensor  # the trunk's output, which the next layer builds on (the encoder's lookahead)

    @functools.cached_property
    def residuals(self) -> torch.Tensor:
        return self.ddl(self.features)

    @property
    def k(self) -> int:
        return self.spec.k

    def _upsampled(self, residual: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) unshuffled residuals -> (N, 3, H, W) full-size residual images."""
        s = self.spec
        out = F.pixel_shuffle(residual, s.stride // s.out_stride)
        if s.out_stride > 1:
            out = F.interpolate(out, size=self.base.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def cost(self, target: torch.Tensor) -> torch.Tensor:
        """Squared error per candidate and cell, (B, K, H/cell, W/cell), measured at
        1/out_stride resolution (exact when out_stride is 1; otherwise it differs from
        the full-resolution error by a per-cell constant, up to bilinear blending)."""
        s = self.spec
        err = target - self.base
        if s.out_stride > 1:
            err = F.avg_pool2d(err, s.out_stride)
        err = F.pixel_unshuffle(err, s.stride // s.out_stride)  # (B, D, h, w)
        heads = self.ddl.distances(self.features, err)  # (B, K-1, h, w)
        cost = torch.cat([err.pow(2).sum(1, keepdim=True), heads], 1)
        group = s.cell // s.stride
        if group > 1:
            cost = F.avg_pool2d(cost, group) * group**2
        return cost * s.out_stride**2

    def compose(self, idx: torch.Tensor) -> torch.Tensor:
        """The image that takes, in every cell, the candidate ``idx`` (B, H/cell, W/cell) names."""
        group = self.spec.cell // self.spec.stride
        pos = idx.repeat_interleave(group, 1).repeat_interleave(group, 2)  # (B, h, w)
        return self.base + self._upsampled(self.ddl.chosen(self.features, pos))

    def images(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Candidates ``start..stop-1`` (default: all K) as whole images, (B, stop-start, 3, H, W):
        candidate k takes symbol k in every cell. For scorers and figures, not for coding."""
        stop = self.k if stop is None else stop
        if not 0 <= start <= stop <= self.k:
            msg = f"candidates {start}..{stop - 1} are not within 0..{self.k - 1}"
            raise ValueError(msg)
        b, _, height, width = self.base.shape
        heads = self.residuals[:, max(start, 1) - 1 : max(stop, 1) - 1]  # symbol k is head k-1
        residuals = self._upsampled(heads.flatten(0, 1)).view(b, -1, 3, height, width)
        keep = [torch.zeros_like(self.base).unsqueeze(1)] if start == 0 < stop else []
        return self.base.unsqueeze(1) + torch.cat([*keep, residuals], 1)


Chooser = Callable[[int, Candidates], torch.Tensor]
"""(layer index, its Candidates) -> indices (B, H/cell, W/cell), int64."""

Projection = Callable[[int, torch.Tensor], torch.Tensor]
"""(layer index, the image it composed) -> the image the next layer builds on."""


class DDN(nn.Module):
    """Coarse-to-fine per-cell DDN. ``forward`` trains; ``walk`` drives any chooser."""

    def __init__(self, config: DDNConfig) -> None:
        super().__init__()
        self.config = config
        prevs = (None, *config.layers[:-1])
        self.layers = nn.ModuleList(CellLayer(s, p) for s, p in zip(config.layers, prevs, strict=True))

    def walk(
        self,
        shape: tuple[int, int, int],
        choose: Chooser,
        layers: int | None = None,
        project: Projection | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Generate coarse to fine with ``choose`` deciding every layer.

        Yields (indices (B, H/cell, W/cell), image so far (B, 3, H, W) in [-0.5, 0.5]
        around gray) after each of the first ``layers`` layers. ``project`` (generation
        only; a codec never passes one) replaces each layer's image before the next layer
        reads it, e.g. by the nearest image that satisfies a condition."""
        b, height, width = shape
        if height % self.config.unit or width % self.config.unit:
            msg = f"image size {width}x{height} is not a multiple of {self.config.unit}"
            raise ValueError(msg)
        x = torch.zeros(b, 3, height, width, device=self.layers[0].embed.weight.device)
        h = None
        count = len(self.layers) if layers is None else layers
        for i, layer in enumerate(self.layers[:count]):
            h = layer.features(h, x)
            options = layer.candidates(h, x)
            idx = choose(i, options)
            x = options.compose(idx)
            if project is not None:
                x = project(i, x)
            yield idx, x

    def forward(self, target: torch.Tensor, choose: Chooser | None = None) -> list[torch.Tensor]:
        """Training pass: per cell the candidate ``choose`` picks (default: the nearest;
        chain dropout aside), loss on the chosen candidates only. Split-and-Prune counts
        the nearest node whatever the choice. Returns the MSE of every layer's output."""

        def training_choice(i: int, options: Candidates) -> torch.Tensor:
            with torch.no_grad():
                cost = options.cost(target)  # (B, K, H/cell, W/cell)
                idx = cost.argmin(1) if choose is None else choose(i, options)
                if self.training:
                    heads = cost[:, 1:].permute(0, 2, 3, 1).reshape(-1, cost.shape[1] - 1)
                    self.layers[i].ddl.observe(heads)
                    if torch.rand(()) < self.config.chain_dropout:
                        idx = torch.randint_like(idx, cost.shape[1])
            return idx

        shape = (target.shape[0], *target.shape[-2:])
        return [F.mse_loss(x, target) for _, x in self.walk(shape, training_choice)]

    def split_decisions(self) -> list[tuple[int, int] | None]:
        return [layer.ddl.split_decision() for layer in self.layers]

    def apply_splits(self, decisions: list[tuple[int, int] | None], optimizer: torch.optim.Optimizer | None) -> int:
        done = 0
        for layer, decision in zip(self.layers, decisions, strict=True):
            if decision is not None:
                layer.ddl.split(*decision, optimizer)
                done += 1
        return done


def nearest(target: torch.Tensor) -> Chooser:
    """The plain DDN encoder: per cell, the candidate nearest the target."""
    return lambda _layer, options: options.cost(target).argmin(1)
