"""Pictures of what the network learned: the latent tree of an image, as in the paper's
figure (``ddncodec tree``). Drawn with Pillow from the encoder's own walk (``nearest``)."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageOps

from ddncodec import generate
from ddncodec.model import Candidates, nearest
from ddncodec.modelfile import CodecModel

CAPTION = 16  # px above each panel, for its caption
GAP = 8  # px between panels


def ring(slots: int) -> list[tuple[int, int]]:
    """Grid positions (column, row) clockwise around the border of the smallest square
    with at least ``slots`` border cells."""
    side = max(3, -(-slots // 4) + 1)
    last = side - 1
    border = (
        [(c, 0) for c in range(last)]
        + [(last, r) for r in range(last)]
        + [(c, last) for c in range(last, 0, -1)]
        + [(0, r) for r in range(last, 0, -1)]
    )
    return border[:slots]


@torch.no_grad()
def tree(model: CodecModel, image: Image.Image, levels: int = 3, thumb: int = 48) -> Image.Image:
    """The latent tree of ``image``, one panel per level as in the paper's figure: the
    chosen node (the reconstruction after that layer) in the centre, its K children (every
    cell taking symbol k) around it, the child chosen in most cells framed in red."""
    levels = min(levels, len(model.config.layers))
    width, height = image.size
    generate.check_size(width, height)
    unit = model.config.unit
    target = generate.from_image(image, unit)
    tile = (thumb, max(1, round(thumb * height / width)))
    children: list[list[Image.Image]] = []
    encode = nearest(target)

    def choose(layer: int, options: Candidates) -> torch.Tensor:
        kids = [options.images(k, k + 1)[:, 0, :, :height, :width] for k in range(options.k)]
        children.append([generate.to_image(kid).resize(tile, Image.BOX) for kid in kids])
        return encode(layer, options)

    panels = []
    for level, (idx, chosen) in enumerate(model.network.walk((1, *target.shape[-2:]), choose, levels)):
        spec = model.config.layers[level]
        slots = ring(spec.k)
        side = max(c for c, _ in slots) + 1
        panel = Image.new("RGB", (side * tile[0], side * tile[1] + CAPTION), "white")
        draw = ImageDraw.Draw(panel)
        draw.text((2, 2), f"level {level + 1}: K={spec.k}, {spec.cell}px cells", fill="black")
        most = int(torch.bincount(idx.flatten(), minlength=spec.k).argmax())
        for k, (col, row) in enumerate(slots):
            box = (col * tile[0], row * tile[1] + CAPTION)
            panel.paste(children[level][k], box)
            if k == most:
                draw.rectangle((*box, box[0] + tile[0] - 1, box[1] + tile[1] - 1), outline="red", width=2)
        inner = ((side - 2) * tile[0], (side - 2) * tile[1])
        centre = ImageOps.contain(generate.to_image(chosen[..., :height, :width]), inner, Image.BOX)
        offset = ((inner[0] - centre.width) // 2, (inner[1] - centre.height) // 2)
        panel.paste(centre, (tile[0] + offset[0], tile[1] + CAPTION + offset[1]))
        panels.append(panel)
    figure = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), panels[0].height), "white")
    left = 0
    for panel in panels:
        figure.paste(panel, (left, 0))
        left += panel.width + GAP
    return figure
