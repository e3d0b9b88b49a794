"""Procedural images whose class is visible: for tests, benchmarks and the offline start.

Class c is drawn as a fixed shape, filled with a fixed hue and a fixed texture; each
image varies position, size, background, hue slightly and pixel noise. A classifier can
learn it in a few hundred steps, a generator's class conditioning shows at a glance,
and no download is needed. Every image is a pure function of (seed, split, class,
index), so a dataset is reproducible whatever order or thread renders it.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tinycats.breeds import CAT_BREEDS
from tinycats.data.oxford import CAT_SPECIES, DOG_SPECIES, AnnotationRow, write_oxford_layout

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
TEXTURES = ("plain", "stripes", "checks", "dots")
SPLIT_SEED_OFFSETS = {"trainval": 0, "test": 1_000_003}
"""The test split is drawn from a different seed stream, so it never repeats a train image."""
TEST_PER_TRAINVAL = 4
"""The synthetic test split has a quarter as many images per class as trainval."""
_GOLDEN = 0.618033988749895


def synthetic_class_names(n: int) -> list[str]:
    """Names of the n synthetic classes, saying what each one looks like."""
    return [
        f"{c:02d}_{SHAPES[c % len(SHAPES)]}_{TEXTURES[(c // len(SHAPES)) % len(TEXTURES)]}"
        for c in range(n)
    ]


def synthetic_test_count(per_class: int) -> int:
    return max(1, per_class // TEST_PER_TRAINVAL)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=255)
    elif shape == "cross":
        w = 0.35 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    else:  # ring
        draw.ellipse(box, fill=255)
        draw.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _texture(texture: str, size: int, period: float, phase: float) -> np.ndarray:
    """Brightness factor (size, size) in [0.45, 1]: the class's surface pattern."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if texture == "stripes":
        on = ((x + y + phase) // period) % 2 == 0
    elif texture == "checks":
        on = (((x + phase) // period) + ((y + phase) // period)) % 2 == 0
    elif texture == "dots":
        on = ((x + phase) % period - period / 2) ** 2 + ((y + phase) % period - period / 2) ** 2 > (
            period / 3
        ) ** 2
    else:
        return np.ones((size, size), np.float32)
    return np.where(on, 1.0, 0.45).astype(np.float32)


def render_synthetic(
    label: int, index: int, size: int, *, seed: int, split: str = "trainval"
) -> np.ndarray:
    """Image `index` of class `label`: uint8 (size, size, 3), a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLIT_SEED_OFFSETS[split], label, index])
    shape = SHAPES[label % len(SHAPES)]
    texture = TEXTURES[(label // len(SHAPES)) % len(TEXTURES)]
    hue = (label * _GOLDEN + rng.uniform(-0.025, 0.025)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.85, rng.uniform(0.75, 1.0)), np.float32) * 255
    background = rng.uniform(40, 200) + rng.uniform(-25, 25, size=3)

    r = size * rng.uniform(0.24, 0.38)
    cx, cy = size / 2 + rng.uniform(-1, 1, size=2) * (size / 2 - r)
    mask = _shape_mask(shape, size, cx, cy, r)[..., None]  # (H, W, 1)
    pattern = _texture(texture, size, period=max(3.0, size / 9), phase=rng.uniform(0, size))[
        ..., None
    ]

    image = mask * colour * pattern + (1 - mask) * background  # (H, W, 3)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_synthetic_folder(
    root: Path, *, trainval: int, test: int, size: int = 160, dogs: int = 0, seed: int = 0
) -> list[Path]:
    """A folder in Oxford layout of synthetic JPEGs named after the 12 cat breeds.

    Tests and benchmarks use it where the real photos are absent, so the folder/JPEG
    code path runs exactly as on real data. `trainval`/`test` images per breed; `dogs`
    images per split of one dog breed (species 2) for --include-other. Returns the files.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[AnnotationRow]] = {"trainval": [], "test": []}
    files = []
    for split, per_class in (("trainval", trainval), ("test", test)):
        for breed_id, breed in enumerate(CAT_BREEDS, start=1):
            for i in range(per_class):
                name = f"{breed}_{split}{i}"
                image = render_synthetic(breed_id - 1, i, size, seed=seed, split=split)
                files.append(root / "images" / f"{name}.jpg")
                Image.fromarray(image).save(files[-1], quality=90)
                rows[split].append(AnnotationRow(name, breed_id, CAT_SPECIES, breed_id))
        for i in range(dogs):
            name = f"beagle_{split}{i}"
            image = render_synthetic(len(CAT_BREEDS), i, size, seed=seed, split=split)
            files.append(root / "images" / f"{name}.jpg")
            Image.fromarray(image).save(files[-1], quality=90)
            rows[split].append(AnnotationRow(name, len(CAT_BREEDS) + 1, DOG_SPECIES, 1))
    write_oxford_layout(root, rows)
    return files
