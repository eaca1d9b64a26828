"""`unlearnable show DIR --out grid.png`: see the protection, as a PNG grid of images per class.

    unlearnable show runs/regions --out runs/regions.png     # one row per class (the first 10)
    unlearnable show runs/lsp --out lsp.png --per-class 3 --classes 0,1,2 --scale 4

Each row is one class of DIR, each image in it a triple: the clean image, the protected one and
the perturbation amplified to be visible. The clean images come from the base set the manifest names.
"""

from __future__ import annotations

import argparse

from ..core.errors import UnlearnableError
from ..data.resolve import load_base
from ..data.store import load_dataset_dir
from ..viz.grid import comparison_grid, default_scale, grid_size, save_png
from .common import add_data_root, out_file, positive_int, refuse_input_overlap


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable show` sub-command to the parser."""
    p = sub.add_parser("show", help="PNG grid per class: clean, protected, amplified perturbation")
    p.add_argument("data", help="protected dataset directory")
    p.add_argument("--out", required=True, type=out_file, help="PNG file to write")
    p.add_argument("--per-class", type=positive_int, default=1, help="images per class (default 1)")
    p.add_argument("--classes", default=None, type=class_list,
                   help="comma-separated class indices to show (default: the first 10)")
    p.add_argument("--scale", type=positive_int, default=None, help="upscale factor (default: cells of ~80 px)")
    add_data_root(p)
    p.set_defaults(func=run)


# 64 megapixels is a 192 MB canvas: far above a readable figure, far below what would exhaust memory
# (uncapped, --scale 100000 would ask for terabytes).
MAX_GRID_PIXELS = 64 << 20


def class_list(text: str) -> list[int]:
    """A `type=` for --classes: comma-separated class indices (checked against DATA later)."""
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects comma-separated integers, got {text!r}") from None
    if not classes:
        raise argparse.ArgumentTypeError(f"names no class, got {text!r}")
    return classes


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable show` with the parsed arguments; the exit code."""
    refuse_input_overlap(args.out, args.data, file=True)
    protected = load_dataset_dir(args.data)
    h, w = protected.image_size
    rows = len(args.classes) if args.classes else min(protected.num_classes, 10)
    width, height = grid_size(rows, args.per_class, (h, w), args.scale or default_scale((h, w)))
    if width * height > MAX_GRID_PIXELS:
        raise UnlearnableError(f"--per-class/--scale/--classes: the grid would be {width}x{height} pixels "
                               f"(more than {MAX_GRID_PIXELS >> 20} megapixels); ask for fewer or smaller cells")
    clean = load_base(protected, args.data_root)
    img = comparison_grid(clean, protected, args.per_class, args.classes, args.scale)
    out = save_png(img, args.out)
    print(f"{args.data}: {img.size[0]}x{img.size[1]} grid -> {out}")
    return 0
