"""`unlearnable show DIR --out grid.png [--per-class 1] [--classes 0,1,2]`: see the protection."""

from __future__ import annotations

import argparse

from .._io import UnlearnableError
from ..data.resolve import load_base
from ..data.store import load_dataset_dir
from ..viz.grid import comparison_grid, save_png
from .common import add_data_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="PNG grid per class: clean, protected, amplified perturbation")
    p.add_argument("data", help="protected dataset directory")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--per-class", type=int, default=1, help="images per class (default 1)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class indices to show (default: the first 10)")
    p.add_argument("--scale", type=int, default=None, help="upscale factor (default: cells of ~80 px)")
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    protected = load_dataset_dir(args.data)
    clean = load_base(protected, args.data_root)
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",") if c.strip()]
        except ValueError:
            raise UnlearnableError(f"--classes expects comma-separated integers, got {args.classes!r}") from None
    img = comparison_grid(clean, protected, args.per_class, classes, args.scale)
    out = save_png(img, args.out)
    print(f"{args.data}: {img.size[0]}x{img.size[1]} grid -> {out}")
    return 0
