"""Clean / protected / perturbation grids: what a protected dataset looks like, one row per class.

The perturbation delta = protected - clean is usually a few grey levels, invisible as is; each
one is min-max rescaled to [0, 1] *per image* (a zero delta shows as mid-grey), so patterns,
patches and single pixels are all visible. Built with numpy and Pillow (nearest-neighbour
upscaling keeps pixels crisp); the PNG is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.errors import UnlearnableError
from ..core.files import atomic_file
from ..data.imageset import ImageSet

PAD = 4  # pixels between cells
HEADER = 18  # pixels above the first row for column titles
LABEL_W = 90  # pixels left of each row for the class name


def amplify(delta: np.ndarray) -> np.ndarray:
    """(n, H, W, C) int deltas -> uint8 images, each min-max rescaled over its own values."""
    d = delta.astype(np.float32)
    lo = d.reshape(len(d), -1).min(1).reshape(-1, 1, 1, 1)
    hi = d.reshape(len(d), -1).max(1).reshape(-1, 1, 1, 1)
    span = hi - lo
    out = np.where(span > 0, (d - lo) / np.where(span > 0, span, 1), 0.5)
    return np.round(out * 255).astype(np.uint8)


def pick_rows(labels: np.ndarray, classes: list[int], per_class: int) -> list[np.ndarray]:
    """The first `per_class` positions of each listed class (fewer if the class is smaller)."""
    return [np.flatnonzero(labels == k)[:per_class] for k in classes]


def grid_size(rows: int, per_class: int, image_hw: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) in pixels of the grid `comparison_grid` makes."""
    ch, cw = image_hw[0] * scale, image_hw[1] * scale
    cols = 3 * per_class
    return LABEL_W + cols * (cw + PAD) + PAD, HEADER + rows * (ch + PAD) + PAD


def default_scale(image_hw: tuple[int, int]) -> int:
    """Upscale factor so a cell is about 64-96 px: 8x8 -> 8, 28x28 -> 3, 32x32 -> 2 (at least 1)."""
    return max(1, round(80 / max(image_hw)))


def comparison_grid(clean: ImageSet, protected: ImageSet, per_class: int = 1,
                    classes: list[int] | None = None, scale: int | None = None,
                    titles: tuple[str, str, str] = ("clean", "protected", "delta (amp.)")) -> Image.Image:
    """An RGB image: per class a row of (clean, protected, amplified delta) x per_class.

    `titles` head the three columns (a purifier's figure: protected, purified, their difference).

    clean and protected must be aligned (same order and shape). `classes` defaults to all
    classes, at most the first 10 (a readable figure for CIFAR-100).
    """
    if clean.images.shape != protected.images.shape:
        raise UnlearnableError(f"clean {clean.images.shape} and protected {protected.images.shape} "
                               "images differ in shape")
    if per_class < 1:
        raise UnlearnableError(f"--per-class must be at least 1, got {per_class}")
    k = protected.num_classes
    classes = list(range(min(k, 10))) if classes is None else list(classes)
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise UnlearnableError(f"classes {bad} out of range [0, {k})")
    h, w = protected.image_size
    scale = scale or default_scale((h, w))
    ch, cw = h * scale, w * scale
    width, height = grid_size(len(classes), per_class, (h, w), scale)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, title in enumerate(tuple(titles) * per_class):
        draw.text((LABEL_W + j * (cw + PAD) + PAD, 3), title[: max(4, cw // 6)], fill="black", font=font)
    for r, (cls, idx) in enumerate(zip(classes, pick_rows(protected.labels, classes, per_class))):
        y = HEADER + r * (ch + PAD) + PAD
        draw.text((4, y + ch // 2 - 6), str(protected.classes[cls])[:14], fill="black", font=font)
        if len(idx) == 0:
            continue
        delta = protected.images[idx].astype(np.int16) - clean.images[idx].astype(np.int16)
        cells = [clean.images[idx], protected.images[idx], amplify(delta)]
        for i in range(len(idx)):
            for c, block in enumerate(cells):
                img = block[i]
                img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
                tile = Image.fromarray(img).resize((cw, ch), Image.NEAREST)
                canvas.paste(tile, (LABEL_W + (3 * i + c) * (cw + PAD) + PAD, y))
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write `image` as PNG atomically."""
    path = Path(path)
    with atomic_file(path, "wb") as f:
        image.save(f, format="PNG")
    return path
