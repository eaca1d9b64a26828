"""`unlearnable demo`: the main job on the embedded default data (what `make demo` runs).

Until the audit exists: trains the ConvNet on Fashion-MNIST with the fast recipe and prints the
clean test accuracy.
"""

from __future__ import annotations

import argparse

from ..train.engine import get_recipe
from ..train.run import train_data
from .common import add_data_root


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the default dataset (Fashion-MNIST)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=3)
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipe = get_recipe("fast").replace(epochs=args.epochs)
    _, res = train_data(args.data, "convnet", recipe, 0, f"{args.out}/clean", args.data_root)
    print(f"demo: ConvNet on {args.data}, {res.epochs} epochs: clean test accuracy "
          f"{100 * res.test_accuracy:.2f}% in {res.seconds:.0f}s")
    return 0
