"""Arguments shared by sub-commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
from .._io import UnlearnableError
from ..train.engine import RECIPES, Recipe


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="directory holding datasets (searched before $UNLEARNABLE_DATA and system locations)")


def add_train_args(p: argparse.ArgumentParser, arch: str = "convnet", recipe: str = "paper") -> None:
    """--arch, --epochs, --seed, --recipe, --batch-size, --lr, --device, --data-root, --no-progress."""
    p.add_argument("--arch", default=arch, help=f"model architecture (default {arch})")
    p.add_argument("--recipe", default=recipe, help=f"recipe preset: {', '.join(RECIPES)} (default {recipe})")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed for initialization, order and augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_root(p)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The `--recipe` preset with `--epochs/--batch-size/--lr`, through the ladder's one function."""
    from ..ladder import recipe_for

    return recipe_for(preset=args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)


def progress_from_args(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "no_progress", False) else None


def parse_params(items: list[str] | None) -> dict[str, str]:
    """`--param k=v` pairs as a dict of strings (each method converts to its typed parameters)."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UnlearnableError(f"--param expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def add_level(p: argparse.ArgumentParser, default: str = "quick") -> None:
    """--level (alias --budget): the compute ladder's rung."""
    from ..ladder import LEVELS

    p.add_argument("--level", "--budget", dest="level", default=default, choices=LEVELS,
                   help="compute: tiny (seconds), quick (CPU minutes), paper (the paper's protocol); "
                        f"default {default}")


def add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None,
                   help="shared job cache for results that do not depend on the audited data (the clean "
                        "reference, the random network's DFR); default $UNLEARNABLE_CACHE or ~/.cache/unlearnable")
