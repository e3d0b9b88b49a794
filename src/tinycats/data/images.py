"""Decode one photo into the stored form: an RGB uint8 square, center-cropped and resized.

The real Oxford-IIIT Pet images include grayscale, CMYK, palette and PNG-with-alpha
files all named .jpg, plus a few that do not decode at all. Everything decodable is
converted to RGB; what is not raises `SkippedImage` with a reason the manifest counts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class SkippedImage(Exception):
    """An image that cannot be used; `reason` is the manifest's skip key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL mode. Transparent pixels become white, not the black (or
    garbage) colour that a plain convert("RGB") leaves under the alpha channel."""
    if image.mode == "RGB":
        return image
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: scale to 8 bits first, convert("RGB") would clip.
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) or 1.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def decode_image(
    source: Path | BinaryIO, size: int, *, max_pixels: int | None = None, draft: bool = True
) -> np.ndarray:
    """(size, size, 3) uint8: the central square of the photo, resized to `size`.

    `source` is a file path or an open binary stream (an upload). `draft` lets libjpeg
    decode at 1/2, 1/4 or 1/8 scale when the photo is much larger than needed, which is
    most of the decoding cost when a dataset is prepared. Inference turns it off: a
    browser cannot decode at a reduced scale, and the web page must see the pixels
    `tinycats predict` sees (a full decode is the same in both, to the pixel). With
    `max_pixels`, a picture whose
    header claims more pixels is refused before any pixel is decoded (a decompression
    bomb: a few kilobytes of PNG can claim gigabytes of pixels).
    """
    if isinstance(source, Path) and not source.is_file():
        raise SkippedImage("missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF/ICC chunks; the pixels are fine
            with Image.open(source) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise SkippedImage(f"{width}x{height} pixels, over the limit of {max_pixels:,}")
                if draft:
                    image.draft("RGB", (size, size))
                image.load()  # a truncated file fails here, not lazily later
                square = ImageOps.fit(to_rgb(image), (size, size), Image.Resampling.BICUBIC)
    except Image.DecompressionBombError:  # PIL's own cap (2x MAX_IMAGE_PIXELS), at open
        limit = max_pixels or 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise SkippedImage(f"more than {limit:,} pixels, the limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise SkippedImage("unreadable") from None
    return np.asarray(square, dtype=np.uint8)
