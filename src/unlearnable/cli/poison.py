"""`unlearnable poison METHOD --dataset DATA --out DIR`: make a protected (unlearnable) training set.

    unlearnable poison --list                                # the methods, their defaults and papers
    unlearnable poison regions --dataset fashion-mnist --out runs/regions --seed 0
    unlearnable poison regions --dataset cifar10 --param p=16 --param eps=8/255 --out runs/c10-regions16
    unlearnable poison lsp --dataset fashion-mnist --subset 10000 --fraction 0.5 --out runs/lsp-half
    unlearnable poison em --dataset fashion-mnist --level quick --device auto --out runs/fm-em
    unlearnable poison em --dataset fashion-mnist --level quick --device auto --out runs/fm-em --resume

Model-based methods (em, rem, tap, ...) keep resumable state in OUT.work/ while they craft;
`--resume` continues a killed run from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from ..core.errors import UnlearnableError
from ..data.store import load_dataset_dir
from ..ladder import LEVELS
from ..poisons import POISONS, PoisonContext, poison_dataset
from .common import (
    writing,
    add_data_root, device, fraction, out_dir, parse_params, positive_int, progress_from_args, seed_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable poison` sub-command to the parser."""
    p = sub.add_parser("poison", help="make a protected (unlearnable) training set; --list shows methods")
    p.add_argument("method", nargs="?", help="poison method (see --list)")
    p.add_argument("--list", action="store_true", help="list the methods with their default parameters")
    p.add_argument("--dataset", help="clean base dataset: name (fashion-mnist, cifar10, digits, ...) "
                                     "or imagefolder:PATH; its training split is protected")
    p.add_argument("--out", type=out_dir, help="output dataset directory")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--param", action="append", metavar="K=V", default=[],
                   help="method parameter, repeatable (e.g. --param p=16, --param eps=8/255)")
    p.add_argument("--fraction", type=fraction, default=1.0,
                   help="poison only this seeded fraction of the samples (default 1.0)")
    p.add_argument("--subset", type=positive_int, default=None,
                   help="protect a random subset of N base images (indices.npy says which)")
    p.add_argument("--subset-seed", type=seed_int, default=0,
                   help="seed of the --subset draw (default 0; independent of --seed, so sets made "
                        "with several seeds protect the same images)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default="cpu", type=device, help="device for model-based methods (default cpu)")
    p.add_argument("--level", default="paper", choices=LEVELS,
                   help="compute level (the ladder's): the cost of model-based methods, and "
                        "cheaper presets of model-free ones at tiny (default paper)")
    # --budget: another spelling of --level (as `add_level` accepts elsewhere), left out of --help.
    p.add_argument("--budget", dest="level", choices=LEVELS, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="model-based methods: continue a killed run from the state in OUT.work/")
    add_data_root(p)
    p.set_defaults(func=run)


def list_methods() -> str:
    """The `--list` text: each registered method's kind and summary, its default parameters, its paper."""
    lines = []
    for name, info in POISONS.items():
        defaults = ", ".join(f"{f.name}={_fmt(f.default)}" for f in dataclasses.fields(info.params_cls))
        lines.append(f"{name:<14} {info.kind:<12} {info.summary}")
        lines.append(f"{'':<14} defaults: {defaults or '(none)'}")
        if info.paper:
            lines.append(f"{'':<14} {info.paper}")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        k = v * 255
        if abs(k - round(k)) < 1e-9 and 0 < v < 1:
            return f"{round(k)}/255"
        return f"{v:g}"
    return str(v)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable poison` with the parsed arguments; the exit code."""
    if args.list:
        print(list_methods())
        return 0
    if not args.method:
        raise UnlearnableError("name a poison method (unlearnable poison --list shows them)")
    if args.method not in POISONS:
        raise UnlearnableError(f"unknown poison {args.method!r} (known: {', '.join(POISONS)})")
    if not args.dataset or not args.out:
        raise UnlearnableError("poison needs --dataset DATA and --out DIR")
    # Model-based methods keep resumable state in OUT.work (poison_dataset chooses, refuses and
    # removes it); the CLI only passes --resume through.
    ctx = PoisonContext(seed=args.seed, device=args.device, progress=progress_from_args(args),
                        level=args.level)
    t0 = time.perf_counter()
    with writing(args.out):
        out = poison_dataset(args.method, args.dataset, args.out, args.seed, parse_params(args.param),
                             args.fraction, args.subset, args.data_root, args.overwrite, ctx,
                             resume=args.resume, subset_seed=args.subset_seed)
    seconds = time.perf_counter() - t0
    man = load_dataset_dir(out).meta["manifest"]
    m = man["perturbation_measured"]
    print(f"{args.method}: {man['num_samples']} images ({man['num_poisoned']} poisoned), "
          f"measured l_inf max {m['linf_max'] * 255:.1f}/255, l2 mean {m['l2_mean']:.3f}, "
          f"{seconds:.1f}s -> {out}")
    return 0
