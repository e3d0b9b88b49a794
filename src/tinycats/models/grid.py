"""A labelled image grid: one row per class, the class name written on the left.

Used for `tinycats sample` and the fixed-seed grids written at each DiT checkpoint, so
a reader can see at a glance which row is meant to be which breed.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

PAD = 2
"""Pixels between cells and around the grid."""


def make_grid_image(images_uint8: Tensor, rows: list[str], ncols: int) -> Image.Image:
    """(len(rows) * ncols, 3, H, W) uint8 images, row-major → one RGB picture.

    Row r holds images[r * ncols : (r + 1) * ncols] and is labelled rows[r].
    """
    n, c, h, w = images_uint8.shape
    assert c == 3, f"expected RGB images, got {c} channels"
    assert n == len(rows) * ncols, f"{n} images do not fill {len(rows)} rows × {ncols} columns"
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((int(probe.textlength(name, font=font)) for name in rows), default=0)
    label_width += 2 * PAD if rows else 0

    width = label_width + ncols * (w + PAD) + PAD
    height = len(rows) * (h + PAD) + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = images_uint8.detach().cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    for r, name in enumerate(rows):
        top = PAD + r * (h + PAD)
        draw.text((PAD, top + h // 2), name, fill="black", font=font, anchor="lm")
        for col in range(ncols):
            cell = Image.fromarray(pixels[r * ncols + col])
            canvas.paste(cell, (label_width + PAD + col * (w + PAD), top))
    return canvas
