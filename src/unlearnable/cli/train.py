"""`unlearnable train DATA --arch NAME --epochs N --out RUN_DIR [--seed S]`."""

from __future__ import annotations

import argparse

from ..train.run import train_data
from .common import add_train_args, progress_from_args, recipe_from_args, refuse_input_overlap, run_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network on a dataset (clean or protected); resumable")
    p.add_argument("data", help="dataset name (fashion-mnist, cifar10, digits, ...) or dataset directory")
    p.add_argument("--out", required=True, type=run_dir, help="run directory (resumed when it exists)")
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_input_overlap(args.out, args.data)
    recipe = recipe_from_args(args)
    _, res = train_data(args.data, args.arch, recipe, args.seed, args.out, args.data_root,
                        args.device, progress_from_args(args))
    print(f"{args.data}: {args.arch} {res.epochs} epochs, clean test accuracy "
          f"{100 * res.test_accuracy:.2f}% ({res.seconds:.1f}s) -> {args.out}/result.json")
    return 0
