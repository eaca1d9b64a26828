"""`unlearnable audit DATA --out DIR`: does DATA protect? The full audit, or one of its analyses by name.

    unlearnable audit runs/regions --level quick --out runs/regions-audit     # the full audit (`audit run`)
    unlearnable audit run runs/regions --clean fashion-mnist --level tiny --out runs/regions-audit
    unlearnable audit dfr runs/regions-audit/train-protected --n 2000 --procedure released
    unlearnable audit separability runs/regions --of perturbations --hidden 30 --repeats 3
    unlearnable audit finetune runs/regions-train --clean-run runs/clean-train --sizes 100,500,1000
    unlearnable audit dfr --help                                              # one analysis's options

The first word after `audit` picks an entry of `SUBCOMMANDS`; anything else is handed to the
entry named by `DEFAULT_SUBCOMMAND` (the full audit, "run").
Each entry builds its own argparse parser (prog "unlearnable audit NAME"), so
`unlearnable audit dfr --help` shows that sub-command's options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analyses.dfr import dfr_curve, load_indices, resolve_clean
from ..analyses.separability import separability_of
from ..attacks import ATTACKS
from ..auditor import AuditConfig, Thresholds, run_audit
from ..auditor.report import summary_text, verdict_title
from ..core.errors import UnlearnableError
from ..core.files import write_json
from ..data.resolve import load_data
from ..train.run import load_run
from .common import (
    tell,
    AuditCommand, Parser, add_cache, add_compute_args, add_level, arch_name, finite_float, in_file, int_in,
    names_in, out_file, positive_float, positive_int, refuse_input_overlap, run_dir, seed_int,
)
from . import finetune


SUBCOMMANDS: dict[str, AuditCommand] = {}
# The entry that handles `unlearnable audit DATA ...` (no sub-command word): set below.
DEFAULT_SUBCOMMAND: str | None = None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable audit` sub-command to the parser (each analysis parses the rest itself)."""
    lines = "\n".join(f"  {name:<14} {cmd.help}" for name, cmd in SUBCOMMANDS.items())
    p = sub.add_parser("audit", help="does DATA protect? every analysis, a verdict, a report (or: dfr, separability)",
                       description=f"sub-commands:\n{lines}\n\n`unlearnable audit NAME --help` for each.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", metavar="SUBCOMMAND", help=", ".join(SUBCOMMANDS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=dispatch)


def sub_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `unlearnable audit NAME`, with the options of that entry of `SUBCOMMANDS`."""
    cmd = SUBCOMMANDS[name]
    p = Parser(prog=f"unlearnable audit {name}", description=cmd.help)
    cmd.configure(p)
    return p


def dispatch(args: argparse.Namespace) -> int:
    """Run `unlearnable audit` with the parsed arguments: the rest of the command line goes to the
    chosen entry's parser, its checks and its run; the exit code."""
    if args.what in SUBCOMMANDS:
        name, argv = args.what, list(args.rest)
    elif args.what is not None and DEFAULT_SUBCOMMAND is not None:
        name, argv = DEFAULT_SUBCOMMAND, [args.what, *args.rest]
    else:
        raise UnlearnableError(f"audit: choose a sub-command: {', '.join(SUBCOMMANDS)} "
                               f"(got {args.what!r}; `unlearnable audit --help`)")
    sub_args = sub_parser(name).parse_args(argv)
    if SUBCOMMANDS[name].check is not None:
        SUBCOMMANDS[name].check(sub_args)
    return SUBCOMMANDS[name].run(sub_args)


# --- dfr ------------------------------------------------------------------------------------------

def _dfr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a training run directory with per-epoch checkpoints")
    p.add_argument("--clean", default=None,
                   help="clean dataset for the head and the test (default: the run's data, or its base)")
    p.add_argument("--n", type=positive_int, default=5000, help="clean training images for the head (default 5000)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the clean subset (default 0)")
    p.add_argument("--max-iter", type=positive_int, default=1000, help="LogisticRegression max_iter (default 1000)")
    p.add_argument("--procedure", choices=("paper", "released"), default="paper",
                   help="paper: a fresh logistic regression on standardized eval-mode features (the paper's "
                        "text, default); released: the released dfr_step_2.py (refit the trained head with "
                        "L-BFGS, BatchNorm statistics re-estimated on the clean images)")
    p.add_argument("--indices", default=None, type=in_file,
                   help="an .npy of indices into the clean training set (e.g. the released "
                        "dfr_indices/CIFAR10/train_5000samples.npy) instead of a seeded draw of --n")
    add_compute_args(p)


def _dfr_run(args: argparse.Namespace) -> int:
    if not Path(args.run_dir).is_dir():
        raise UnlearnableError(f"{args.run_dir}: no such run directory")

    tr = te = None
    if args.clean or args.indices:
        tr, te = resolve_clean(args.clean or load_run(Path(args.run_dir))[0].data, args.data_root)
    idx = load_indices(args.indices, len(tr)) if args.indices else None
    r = dfr_curve(args.run_dir, tr, te, n=args.n, seed=args.seed, device=args.device,
                  progress=False if args.no_progress else None, data_root=args.data_root,
                  max_iter=args.max_iter, procedure=args.procedure, indices=idx)
    stem = "dfr" if args.procedure == "paper" else f"dfr-{args.procedure}"
    print(f"DFR {args.run_dir}: max {100 * r['max_dfr_accuracy']:.2f}% at epoch {r['max_dfr_epoch']}, "
          f"random init {100 * r['random_init_dfr_accuracy']:.2f}% "
          f"(gain {r['gain_over_random_init_points']:+.2f} points), min loss {r['min_dfr_loss']:.3f} "
          f"at epoch {r['min_dfr_epoch']} ({args.procedure} procedure) -> {args.run_dir}/{stem}.json, {stem}.png")
    return 0


# --- separability ---------------------------------------------------------------------------------

# A hidden layer this wide already has millions of weights on CIFAR-sized inputs (the paper's is
# 30); uncapped, --hidden 10^9 would ask for 256 GB.
MAX_HIDDEN = 4096


def _sep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="protected dataset directory (or a dataset name with --of images)")
    p.add_argument("--of", choices=("perturbations", "images"), default="perturbations",
                   help="fit delta = x' - x (needs the base set) or the images themselves")
    p.add_argument("--hidden", type=int_in(0, MAX_HIDDEN), default=0,
                   help="0: linear; 30: one tanh hidden layer of 30")
    p.add_argument("--steps", type=positive_int, default=500, help="L-BFGS steps (default 500)")
    p.add_argument("--max-iter", type=positive_int, default=20,
                   help="L-BFGS evaluations per step (default 20, the released script's; 1: one per step)")
    p.add_argument("--lr", type=positive_float, default=0.5)
    p.add_argument("--repeats", type=positive_int, default=1, help="seeded repeats, mean and std (default 1)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--n", type=positive_int, default=None, help="use a seeded random subset of N samples")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--early-stop", action="store_true",
                      help="stop a run once it fits every sample (not the released script's; saves time)")
    stop.add_argument("--no-early-stop", action="store_true", help="run every step (the default, as released)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the clean images' fit at the same N and settings (the baseline every result "
                        "is read against)")
    p.add_argument("--out", default=None, type=out_file,
                   help="JSON file to write (default DATA/separability.json for the default settings, "
                        "DATA/separability-OF-hiddenH.json otherwise; DATA must be a directory)")
    add_compute_args(p, default_device="cpu")


def _sep_check(args: argparse.Namespace) -> None:
    refuse_input_overlap(args.out, args.data, file=True)


def _sep_run(args: argparse.Namespace) -> int:

    ds = load_data(args.data, "train", args.data_root)
    r = separability_of(ds, args.of, data_root=args.data_root, n=args.n, hidden=args.hidden,
                        steps=args.steps, lr=args.lr, repeats=args.repeats, seed=args.seed,
                        max_iter=args.max_iter, early_stop=args.early_stop, device=args.device,
                        progress=False if args.no_progress else None, baseline=not args.no_baseline)
    r["data"] = str(args.data)
    out = args.out
    if out is None and Path(args.data).is_dir():
        default = args.of == "perturbations" and args.hidden == 0
        out = Path(args.data) / ("separability.json" if default else f"separability-{args.of}-hidden{args.hidden}.json")
    if out is not None:
        write_json(out, r)
    where = f" -> {out}" if out is not None else " (not saved: pass --out)"
    b = r.get("baseline")
    base = "" if not b else (f"; clean images {100 * b['train_accuracy_mean']:.2f}% at the same N"
                             + ("" if r.get("informative") else " (uninformative at this N)"))
    print(f"separability of {args.data} {args.of} ({r['settings']['model']}, N={r['n']}): train accuracy "
          f"{100 * r['train_accuracy_mean']:.2f}% +- {100 * r['train_accuracy_std']:.2f} over {args.repeats} "
          f"run(s){base}, {r['seconds']:.1f}s{where}")
    return 0


SUBCOMMANDS["dfr"] = AuditCommand("DFR: clean linear head on each checkpoint's features (Fig. 2)", _dfr_args, _dfr_run)
SUBCOMMANDS["separability"] = AuditCommand("linear separability of perturbations or images (Tables 2, 6)",
                                           _sep_args, _sep_run, _sep_check)


# --- the full audit: `unlearnable audit DATA --out DIR` --------------------------------------------
def _full_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="protected dataset directory (or a dataset name)")
    p.add_argument("--out", required=True, type=run_dir,
                   help="audit directory (a rerun continues where it stopped)")
    p.add_argument("--clean", default=None, help="the clean base dataset, when the manifest does not name it")
    p.add_argument("--arch", default="convnet", type=arch_name, help="architecture (default convnet)")
    add_level(p)
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="override the level's epochs for every training, attacks included")
    p.add_argument("--attacks", default=None, type=names_in(ATTACKS, "attack"),
                   help="comma-separated attacks, all of them run (default: the level's panel, one attack "
                        "of each family, tried in turn until one breaks the protection)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="rerun the decisive trainings (clean reference, standard training, the attack whose figure "
                        "decided) on N seeds in all; their figures become mean +- std (default 1)")
    p.add_argument("--exhaustive", action="store_true",
                   help="run the level's whole panel instead of stopping at the first attack that breaks it")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--broken-at", type=finite_float(0.0, 1.0, lo_open=True), default=0.8,
                   help="an attack breaks the protection at this fraction of clean accuracy (default 0.8)")
    p.add_argument("--leak-at", type=finite_float(0.0, 1.0, lo_open=True), default=0.5,
                   help="DFR leaks features when it recovers this fraction of the window between random "
                        "networks and the clean-trained network (default 0.5)")
    p.add_argument("--leak-spread", type=finite_float(0.0), default=2.0,
                   help="... and its gain exceeds this many times the random networks' spread (default 2)")
    p.add_argument("--leak-points", type=finite_float(0.0), default=0.0,
                   help="... and at least this many points (an absolute floor; default 0)")
    p.add_argument("--dfr-procedure", choices=("paper", "released"), default="paper",
                   help="how DFR fits its head: the paper's text (default) or the released dfr_step_2.py")
    p.add_argument("--dfr-indices", default=None, type=in_file,
                   help="an .npy of indices into the clean training set for DFR's head (the released files)")
    p.add_argument("--restart", action="store_true",
                   help="start unfinished trainings over instead of resuming them "
                        "(use when a checkpoint is unreadable)")
    add_cache(p)
    add_compute_args(p)


def _full_check(args: argparse.Namespace) -> None:
    refuse_input_overlap(args.out, args.data)
    refuse_input_overlap(args.out, args.clean, what="the clean dataset")


def _full_run(args: argparse.Namespace) -> int:

    cfg = AuditConfig(arch=args.arch, level=args.level, seed=args.seed, epochs=args.epochs,
                      attacks=tuple(a for a in args.attacks.split(",") if a) if args.attacks else None,
                      thresholds=Thresholds(args.broken_at, args.leak_points, args.leak_at, args.leak_spread),
                      device=args.device, dfr_procedure=args.dfr_procedure, dfr_indices=args.dfr_indices,
                      exhaustive=args.exhaustive, seeds=args.seeds)
    r = run_audit(args.data, args.out, cfg, clean=args.clean, data_root=args.data_root,
                  progress=False if args.no_progress else None, cache=args.cache, restart=args.restart)
    print(summary_text([r]))
    skipped = {n: s.get("reason") for n, s in r["steps"].items() if s.get("status") == "skipped"}
    for n, why in skipped.items():
        print(f"  {n}: skipped ({why})")
    v = r["verdict"]
    print(f"verdict: {verdict_title(v)} - {v['reason']}\nreport: {Path(args.out) / 'report.html'}")
    # A step that failed is not a result: say which, on stderr, and exit non-zero.
    failed = r.get("failed_steps") or {}
    for name, why in failed.items():
        tell(f"unlearnable: audit step {name} {r['steps'][name]['status']}: {why}")
    return 1 if failed else 0


SUBCOMMANDS["run"] = AuditCommand("the full audit: every analysis, a verdict, report.html (default)",
                                  _full_args, _full_run, _full_check)
SUBCOMMANDS["finetune"] = finetune.COMMAND
DEFAULT_SUBCOMMAND = "run"

