"""`unlearnable export DIR --format png-folder --out OUT`: a dataset in a layout other tools read."""

from __future__ import annotations

import argparse

from ..imports import EXPORTERS, export_dataset
from .common import add_data_root, out_dir


def register(sub: argparse._SubParsersAction) -> None:
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
    out = export_dataset(args.data, args.format, args.out, overwrite=args.overwrite,
                         progress=False if args.no_progress else None, data_root=args.data_root)
    print(f"exported {args.data} as {args.format} -> {out}")
    return 0
