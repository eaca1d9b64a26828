"""`unlearnable attack NAME DATA --out RUN_DIR`: train with attack NAME on protected DATA; the clean test accuracy.

    unlearnable attack --list                                                # the attacks and their papers
    unlearnable attack ortho-proj runs/regions --recipe fast --out runs/regions-op
    unlearnable attack early-stop runs/regions --param k=500 --epochs 5 --out runs/regions-es
    unlearnable attack ortho-proj runs/regions --save-recovered --out runs/regions-op   # keep the projected set
    unlearnable attack dvae runs/cuda --level quick --out runs/cuda-dvae --save-purified data/cuda-dvae
    unlearnable attack all runs/regions --attacks ortho-proj,mean-sub,jpeg --recipe fast --out runs/regions-attacks

Generic over the `ATTACKS` registry: DATA's training split is the protected set, its clean test
split the test set, and (when the manifest names a base that can be loaded) the aligned clean
images are passed along for attacks that want them.
"""

from __future__ import annotations

import argparse
import logging

from ..attacks import ATTACKS, AttackContext, get_attack
from ..attacks.compare import summary_markdown
from ..attacks.purify import copy_training_set, refuse_existing
from ..core.errors import UnlearnableError
from ..core.registry import lookup_all
from ..data.clean import clean_side
from ..data.resolve import load_data
from ..kinds import run_all, run_attack
from ..ladder import LEVELS, recipe_for
from .common import (
    writing,
    add_train_args, names_in, parse_params, progress_from_args, recipe_from_args, refuse_input_overlap, run_dir,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable attack` sub-command to the parser."""
    p = sub.add_parser("attack", help="learn from a protected dataset anyway (ortho-proj, mean-sub, ...)",
                       description="Train on DATA with attack NAME and report clean test accuracy. "
                                   "`unlearnable attack --list` shows the attacks.")
    p.add_argument("name", nargs="?", help="attack name (see --list), or `all` to compare them")
    p.add_argument("data", nargs="?", help="protected dataset directory, or a dataset name")
    p.add_argument("--out", type=run_dir, help="run directory (resumed when it exists)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="attack parameter (repeatable)")
    p.add_argument("--save-recovered", action="store_true",
                   help="also write the transformed training set (same as --param save_recovered=true)")
    p.add_argument("--save-purified", metavar="DIR", default=None,
                   help="a purifier (dvae): also write the purified training set to DIR, a new dataset directory")
    p.add_argument("--level", choices=LEVELS, default=None,
                   help="the compute ladder's rung: the attack's recipe and parameter presets there "
                        "(replaces --recipe; --epochs/--batch-size/--lr and --param still apply)")
    p.add_argument("--list", action="store_true", help="list the attacks and exit")
    p.add_argument("--attacks", default=None, type=names_in(ATTACKS, "attack"),
                   help="with `all`: comma-separated attacks (default: every one)")
    add_train_args(p)
    p.set_defaults(func=run)


def list_attacks() -> str:
    """The `--list` text: one line per registered attack, with its family, summary and paper."""
    width = max(map(len, ATTACKS), default=0)
    fam = max((len(i.family) for i in ATTACKS.values()), default=0)
    return "\n".join(f"{n:<{width}}  {ATTACKS[n].family:<{fam}}  {ATTACKS[n].summary}"
                     + (f"  [{ATTACKS[n].paper}]" if ATTACKS[n].paper else "") for n in sorted(ATTACKS))


def context_for(data: str, out: str, args: argparse.Namespace) -> AttackContext:
    """The `AttackContext` of DATA: its training and clean test splits, the aligned clean base
    when one can be loaded, and the training options of `args`."""
    train = load_data(data, "train", args.data_root)
    test = load_data(data, "test", args.data_root)
    if test.chw != train.chw:
        raise UnlearnableError(f"test images {test.chw} differ in shape from training images {train.chw}")
    # A clean dataset is its own base; only some attacks need the base, and they say so themselves.
    side = clean_side(train, None if "manifest" in train.meta else str(data), args.data_root)
    for note in side.notes:
        log.warning("%s", note)
    return AttackContext(train, test, args.arch, recipe_from_args(args), args.seed, out, args.device,
                         progress_from_args(args), side.base, data)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable attack` with the parsed arguments; the exit code."""
    if args.list:
        print(list_attacks())
        return 0
    if not args.name or not args.data:
        raise UnlearnableError("usage: unlearnable attack NAME DATA --out RUN_DIR (or --list)")
    refuse_input_overlap(args.out, args.data)
    if args.name == "all":
        return run_all_cli(args)
    info = get_attack(args.name)
    if not args.out:
        raise UnlearnableError("attack needs --out RUN_DIR")
    params = parse_params(args.param)
    if args.level is not None:
        params = {**info.preset(args.level), **params}
    if args.save_recovered:
        params["save_recovered"] = "true"
    if args.save_purified is not None:
        if info.purified_set is None:
            raise UnlearnableError(f"--save-purified: attack {args.name} keeps no purified training set "
                                   "(it transforms each batch while training, or trains as it is)")
        refuse_input_overlap(args.save_purified, args.data, "--save-purified")
        refuse_existing(args.save_purified)
    with writing(args.out):
        ctx = context_for(args.data, args.out, args)
        if args.level is not None:
            ctx.recipe = recipe_for(args.level, attack=args.name, epochs=args.epochs, batch_size=args.batch_size,
                                    lr=args.lr)
        res = run_attack(args.name, ctx, params)
        if args.save_purified is not None:
            saved = copy_training_set(ctx.out_dir / info.purified_set, args.save_purified)
            print(f"purified training set -> {saved}")
    extra = ""
    if res.get("test_accuracy_transformed_test") is not None:
        extra = f", test inputs transformed too: {100 * res['test_accuracy_transformed_test']:.2f}%"
    print(f"{args.name} on {args.data}: {args.arch}, clean test accuracy {100 * res['test_accuracy']:.2f}%"
          f"{extra} ({res['seconds_total']:.1f}s) -> {args.out}/result.json")
    return 0


def run_all_cli(args: argparse.Namespace) -> int:
    """Run `unlearnable attack all`: every attack (or those of --attacks) on DATA, compared in a
    table on stdout and OUT/summary.json; the exit code."""
    if not args.out:
        raise UnlearnableError("attack all needs --out DIR")
    names = [a for a in args.attacks.split(",") if a] if args.attacks else None
    lookup_all(ATTACKS, names or [], "attack")
    if args.param or args.save_purified or args.level:
        raise UnlearnableError("attack all takes no --param, --save-purified or --level (run single attacks "
                               "for those; --recipe sets the training)")
    with writing(args.out):
        summary = run_all(context_for(args.data, args.out, args), names)
    print(summary_markdown(summary), end="")
    print(f"-> {args.out}/summary.json")
    return 0
