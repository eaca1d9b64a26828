"""`unlearnable train DATA --out RUN_DIR`: train a network on a dataset and evaluate it on its clean test split.

    unlearnable train fashion-mnist --arch convnet --recipe fast --epochs 3 --out runs/fmnist
    unlearnable train runs/lsp --recipe paper --out runs/lsp-train      # a protected set: its base's test split
    unlearnable train cifar10 --arch resnet18 --batch-size 256 --lr 0.2 --seed 1 --out runs/clean-rn18
    unlearnable train imagefolder:photos --recipe tiny --device cpu --out runs/photos   # photos/{train,test}/CLASS/

A rerun of the same command resumes RUN_DIR from its last finished epoch (a run made with other
settings is refused); the result is RUN_DIR/result.json.
"""

from __future__ import annotations

import argparse

from ..train.run import train_data
from .common import add_train_args, progress_from_args, recipe_from_args, refuse_input_overlap, run_dir, writing


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable train` sub-command to the parser."""
    p = sub.add_parser("train", help="train a network on a dataset (clean or protected); resumable")
    p.add_argument("data", help="dataset name (fashion-mnist, cifar10, digits, ...) or dataset directory")
    p.add_argument("--out", required=True, type=run_dir, help="run directory (resumed when it exists)")
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable train` with the parsed arguments; the exit code."""
    refuse_input_overlap(args.out, args.data)
    recipe = recipe_from_args(args)
    with writing(args.out):
        _, res = train_data(args.data, args.arch, recipe, args.seed, args.out, args.data_root,
                            args.device, progress_from_args(args))
    print(f"{args.data}: {args.arch} {res.epochs} epochs, clean test accuracy "
          f"{100 * res.test_accuracy:.2f}% ({res.seconds:.1f}s) -> {args.out}/result.json")
    return 0
