"""`unlearnable export DIR --format FORMAT --out OUT`: write a dataset in a layout other tools read.

    unlearnable export runs/lsp --format png-folder --out runs/lsp-png     # data/{index}.png + labels.csv
    unlearnable export runs/lsp --format imagefolder --out runs/lsp-if     # CLASS/{index}.png
    unlearnable export runs/lsp --format npz --out runs/lsp-npz --overwrite   # dataset.npz, replacing OUT

Each layout round-trips through `unlearnable import` against the same base set.
"""

from __future__ import annotations

import argparse

from ..imports import EXPORTERS, export_dataset
from .common import add_data_root, out_dir, writing


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable export` sub-command to the parser."""
    p = sub.add_parser("export", help="write a dataset as PNG folder, ImageFolder or npz (round-trips via import)")
    p.add_argument("data", metavar="DIR", help="dataset directory (or dataset name)")
    p.add_argument("--format", default="png-folder", choices=list(EXPORTERS),
                   help="png-folder (data/{index}.png + labels.csv), imagefolder (CLASS/{index}.png), npz")
    p.add_argument("--out", required=True, metavar="OUT", type=out_dir, help="directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable export` with the parsed arguments; the exit code."""
    with writing(args.out):
        out = export_dataset(args.data, args.format, args.out, overwrite=args.overwrite,
                             progress=False if args.no_progress else None, data_root=args.data_root)
    print(f"exported {args.data} as {args.format} -> {out}")
    return 0
