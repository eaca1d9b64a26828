"""`unlearnable audit finetune RUN_DIR`: fine-tune the run's final network on k clean images.

    unlearnable audit finetune runs/regions-train --sizes 100,500,1000,5000
    unlearnable audit finetune runs/regions-train --clean-run runs/clean-train --epochs 5 --out runs/regions-ft
    unlearnable audit finetune runs/regions-train --each-checkpoint --lr 0.01 --seed 1

Beside each fine-tuning, trains from the run's initialization on the same k images and, with
--clean-run, fine-tunes the clean-trained network (analyses/finetune.py). `COMMAND` is the
entry `audit.py` registers as `audit finetune`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analyses.dfr import resolve_clean
from ..analyses.finetune import FinetuneParams
from ..core.errors import UnlearnableError
from ..kinds import finetune_curve
from .common import (
    AuditCommand, add_compute_args, int_in, nonneg_int, positive_float, positive_int, run_dir, seed_int,
)


def sizes(text: str) -> tuple[int, ...]:
    """A `type=` for --sizes: comma-separated integers >= 1."""
    parse = int_in(1)
    out = tuple(parse(t.strip()) for t in text.split(",") if t.strip())
    if not out:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}")
    return out


def _args(p: argparse.ArgumentParser) -> None:
    """Add the `unlearnable audit finetune` arguments to its parser."""
    d = FinetuneParams()
    p.add_argument("run_dir", help="a finished training run directory (its final checkpoint is the start)")
    p.add_argument("--sizes", type=sizes, default=d.sizes,
                   help=f"clean training images k, comma-separated (default {','.join(map(str, d.sizes))})")
    p.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help=f"epochs over the k images (default {d.epochs})")
    p.add_argument("--min-steps", type=positive_int, default=d.min_steps,
                   help=f"at least this many SGD steps, whatever k (default {d.min_steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"initial lr, cosine to 0 (default {d.lr})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--clean-run", default=None,
                   help="a run of the same architecture trained on the clean images (the reference (c))")
    p.add_argument("--clean", default=None, help="clean dataset for the subsets and the test (default: the run's base)")
    p.add_argument("--out", default=None, type=run_dir, help="where finetune.json/png go (default RUN_DIR)")
    p.add_argument("--each-checkpoint", action="store_true", help="also fine-tune from every epoch's checkpoint")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the subsets and the fine-tuning (default 0)")
    p.add_argument("--dfr-n", type=nonneg_int, default=5000,
                   help="DFR's clean subset size, whose images are left out (default 5000, as `audit dfr`)")
    p.add_argument("--cache-dir", default=None, type=run_dir,
                   help="keep each fine-tune's result in DIR/results.sqlite: analyses of one base sharing it "
                        "compute the scratch and clean references once (default OUT/jobs.sqlite)")
    add_compute_args(p)


def _check(args: argparse.Namespace) -> None:
    for name, d in (("RUN_DIR", args.run_dir), ("--clean-run", args.clean_run)):
        if d is not None and not (Path(d) / "run.json").is_file():
            raise UnlearnableError(f"{name} {d}: not a training run directory (no run.json)")


def _run(args: argparse.Namespace) -> int:
    """Run `unlearnable audit finetune` with the parsed arguments; the exit code."""
    try:
        params = FinetuneParams(args.sizes, args.epochs, args.min_steps, args.lr, args.batch_size)
    except ValueError as e:
        raise UnlearnableError(f"audit finetune: {e}") from None
    tr = te = None
    if args.clean:
        tr, te = resolve_clean(args.clean, args.data_root)
    r = finetune_curve(args.run_dir, args.clean_run, tr, te, params, seed=args.seed, dfr_n=args.dfr_n,
                       out_dir=args.out, each_checkpoint=args.each_checkpoint, device=args.device,
                       progress=False if args.no_progress else None, data_root=args.data_root,
                       cache_dir=args.cache_dir)
    print(f"fine-tuning {args.run_dir} (clean test accuracy, %):")
    print(f"  {'k':>6} {'protected':>10} {'scratch':>8} {'clean':>7} {'gain':>7} {'recovered':>9}")
    for row in r["rows"]:
        c = "-" if row["clean"] is None else f"{100 * row['clean']:.2f}"
        f = "-" if row["recovered_fraction"] is None else f"{100 * row['recovered_fraction']:.0f}%"
        print(f"  {row['k']:>6} {100 * row['protected']:>10.2f} {100 * row['scratch']:>8.2f} {c:>7} "
              f"{100 * row['gain']:>+7.2f} {f:>9}")
    out = Path(args.out or args.run_dir)
    print(f"-> {out / 'finetune.json'}, {out / 'finetune.png'} ({r['seconds']:.0f}s)")
    return 0


COMMAND = AuditCommand("fine-tune on k clean images vs scratch and the clean network",
                                       _args, _run, _check)
