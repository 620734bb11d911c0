"""TIMING STAND-IN for CompressAI's bmshj2018-factorized (Ballé et al., ICLR 2018,
``FactorizedPrior``, N=128, M=192: the zoo's quality 1-5 size). Not a codec.

CompressAI's wheel imports torchvision, which does not import beside the torch 2.13 CPU
build, so ``ddncodec bench`` times this re-implementation instead. Its speed does not
depend on its weights, so they are random (seeded): the bitrates and PSNR it produces are
meaningless and the bench reports only its seconds and memory.

What is timed, like CompressAI's ``compress``/``decompress`` on a CPU:

    encode: pad to a multiple of 64 (zeros) -> g_a (4 x conv 5x5 stride 2, GDN between)
            -> round -> range coding of the latent, one fixed table per channel
    decode: range decoding -> g_s (4 x deconv 5x5 stride 2, IGDN between) -> crop -> 8 bit

The entropy-coding step is real (lossless, tested) but not CompressAI's: constriction's
range coder with fixed per-channel tables instead of CompressAI's C++ rANS with learned CDFs
and escape codes for out-of-range values (here clipped to +-TAIL). Both cost
O(latent size); the transforms dominate either way.

CompressAI 1.2.8's own bmshj2018-factorized (random weights, in an environment with a
torchvision it imports) was measured once on an idle 2-core machine of this project at
``PACKAGE_SECONDS`` per 768x512 image; the bench report sets the stand-in beside that figure.

Run alone to time it on an image: ``python -m ddncodec.bench.standin [IMAGE]``.
"""

from __future__ import annotations

import struct
import sys
import time

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

N, M = 128, 192
PACKAGE_SECONDS = (0.37, 0.51)  # CompressAI 1.2.8 itself: encode, decode of one 768x512 image
PACKAGE_PIXELS = 768 * 512
PAD_TO = 64  # CompressAI pads to 2**6 before compress()
TAIL = 15  # latent symbols are clipped to [-TAIL, TAIL]
LATENT_STD = 2.0  # random weights give a latent of std ~0.06, all zeros once rounded; rescale it


class GDN(nn.Module):
    """Generalized divisive normalisation: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    (inverse: multiply), CompressAI's default initialisation."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(F.conv2d(x * x, self.gamma, self.beta))
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class FactorizedPriorTransforms(nn.Module):
    """The analysis and synthesis transforms of bmshj2018-factorized (x16 down / up)."""

    def __init__(self) -> None:
        super().__init__()
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )  # (B, 3, H, W) -> (B, M, H/16, W/16)
        self.g_s = nn.Sequential(
            deconv(M, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, 3),
        )


class Codec:
    """The bench's codec interface: ``encode(image, quality) -> bytes``, ``decode(bytes) -> image``."""

    name = "bmshj2018-factorized (stand-in)"
    timing_only = True

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = FactorizedPriorTransforms().eval()
        calibration = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            last = self.net.g_a[-1]
            gain = LATENT_STD / self.net.g_a(calibration).std()
            last.weight.mul_(gain)
            last.bias.mul_(gain)
        symbols = self.analyse_tensor(calibration)  # (M, h, w) in [-TAIL, TAIL]
        counts = np.stack([np.bincount(s.ravel() + TAIL, minlength=2 * TAIL + 1) for s in symbols])
        # Fixed per-channel tables, built once like CompressAI's update(); never zero.
        self.tables = [constriction.stream.model.Categorical(c.astype(np.float64) + 1, perfect=False) for c in counts]

    def info(self) -> dict:
        return {"N": N, "M": M, "parameters": sum(p.numel() for p in self.net.parameters()), "weights": "random"}

    @torch.inference_mode()
    def analyse_tensor(self, x: torch.Tensor) -> np.ndarray:
        """(1, 3, H, W) in [0, 1], H and W multiples of 64 -> (M, H/16, W/16) int32 symbols."""
        y = self.net.g_a(x)[0]
        return torch.round(y).clamp_(-TAIL, TAIL).to(torch.int32).numpy()

    def analyse(self, image: Image.Image) -> np.ndarray:
        x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % PAD_TO, 0, -h % PAD_TO))
        return self.analyse_tensor(x)

    def encode(self, image: Image.Image, quality: int | None = None) -> bytes:
        symbols = self.analyse(image)
        encoder = constriction.stream.queue.RangeEncoder()
        for channel, table in zip(symbols, self.tables, strict=True):
            encoder.encode(channel.ravel() + TAIL, table)
        words = encoder.get_compressed().astype("<u4").tobytes()
        return struct.pack("<II", image.width, image.height) + words

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, int, int]:
        width, height = struct.unpack_from("<II", data)
        rows, cols = -(-height // PAD_TO) * PAD_TO // 16, -(-width // PAD_TO) * PAD_TO // 16
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4", offset=8).astype(np.uint32))
        symbols = np.stack([decoder.decode(table, rows * cols).reshape(rows, cols) for table in self.tables])
        return symbols.astype(np.int32) - TAIL, width, height

    @torch.inference_mode()
    def decode(self, data: bytes) -> Image.Image:
        symbols, width, height = self.decode_symbols(data)
        x = self.net.g_s(torch.from_numpy(symbols)[None].float())[0, :, :height, :width]
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(pixels)


def main(argv: list[str]) -> None:
    """Time encode and decode (best of 3) on an image, default a random 768x512 one."""
    if argv:
        image = Image.open(argv[0]).convert("RGB")
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8))
    codec = Codec()
    enc, dec = [], []
    for _ in range(3):
        start = time.perf_counter()
        data = codec.encode(image)
        enc.append(time.perf_counter() - start)
        start = time.perf_counter()
        codec.decode(data)
        dec.append(time.perf_counter() - start)
    print(
        f"{codec.name} {image.width}x{image.height}, {torch.get_num_threads()} threads: "
        f"encode {min(enc):.3f} s, decode {min(dec):.3f} s (best of 3)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
