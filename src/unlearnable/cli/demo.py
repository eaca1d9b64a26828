"""`unlearnable demo [--out DIR]`: the main job on the embedded default data (what `make demo` runs).

    unlearnable demo                                         # writes runs/demo/report.html
    unlearnable demo --level tiny --subset 2000 --out runs/demo-tiny           # a quick smoke test
    unlearnable demo --methods random-noise,regions,lsp,ops,ar --attacks ortho-proj,jpeg --out runs/demo2

Protects a seeded 20,000-image subset of Fashion-MNIST with three fast generators (Regions-4,
LSP, AR), audits each at the quick level with 9 epochs (standard training, the clean reference,
DFR, separability, Orthogonal Projection), and writes runs/demo/report.html comparing them, with
a summary table on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..attacks import ATTACKS
from ..auditor.demo import DEMO_QUICK_EPOCHS, DemoConfig, run_demo
from ..auditor.report import summary_text
from ..poisons import POISONS
from .common import (
    tell,
    add_cache, add_data_root, add_level, arch_name, names_in, nonneg_int, positive_int, refuse_input_overlap,
    run_dir, seed_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable demo` sub-command to the parser."""
    d = DemoConfig()
    p = sub.add_parser("demo", help="protect Fashion-MNIST several ways, audit each, compare (make demo)")
    p.add_argument("--data", default=d.data, help=f"clean dataset (default {d.data})")
    p.add_argument("--out", default="runs/demo", type=run_dir,
                   help="output directory (default runs/demo; reused when rerun)")
    p.add_argument("--methods", default=",".join(d.methods), type=names_in(POISONS, "poison"),
                   help="comma-separated poisons")
    p.add_argument("--subset", type=nonneg_int, default=d.subset,
                   help=f"training images per protected set (default {d.subset}; 0 = all)")
    add_level(p, d.level)
    p.add_argument("--attacks", default=",".join(d.attacks or ()), type=names_in(ATTACKS, "attack"),
                   help="comma-separated attacks (default: the cheap ones; add adv-train for the full table)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"override the level's epochs (default {DEMO_QUICK_EPOCHS} at the quick level, "
                        "the level's own otherwise)")
    p.add_argument("--arch", default=d.arch, type=arch_name)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_cache(p)
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable demo` with the parsed arguments; the exit code."""
    refuse_input_overlap(args.out, args.data)
    cfg = DemoConfig(data=args.data, methods=tuple(m for m in args.methods.split(",") if m),
                     subset=args.subset or None, level=args.level, arch=args.arch, seed=args.seed,
                     attacks=tuple(a for a in args.attacks.split(",") if a),
                     epochs=args.epochs)
    t0 = time.perf_counter()
    results = run_demo(args.out, cfg, args.data_root, False if args.no_progress else None, args.cache)
    print(summary_text(results))
    print(f"demo: {len(results)} protected sets audited in {(time.perf_counter() - t0) / 60:.1f} min "
          f"-> {Path(args.out) / 'report.html'}")
    failed = [(r["_dir"], n, why) for r in results for n, why in (r.get("failed_steps") or {}).items()]
    for m, n, why in failed:
        tell(f"unlearnable: demo {m}: audit step {n}: {why}")
    return 1 if failed else 0
