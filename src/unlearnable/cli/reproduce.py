"""`unlearnable reproduce TABLE --dataset D`: one of the paper's tables as a resumable grid.

    unlearnable reproduce table3 --dataset fashion-mnist --level quick --methods regions,lsp --subset 10000
    unlearnable reproduce table2 --dataset fashion-mnist --level tiny --workers 2 --out runs/t2
    unlearnable reproduce table1 --dataset cifar10 --level paper --executor ray --address auto
    unlearnable reproduce table3 --dataset cifar10 --executor ray --address HEAD:6379 --artifacts s3://bucket/t3
    unlearnable reproduce table4 --dataset cifar10 --arch resnet18 --arch vgg16 --dry-run
    unlearnable reproduce leaderboard --dataset fashion-mnist --level quick --subset 20000 --seeds 3

Every cell is a job in the result store (--db); finished cells are never recomputed, so rerunning
the same command after a kill continues where it stopped. Writes TABLE-DATASET.md/.csv/.html
(and .png for fig2) under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..attacks import ATTACKS
from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..data.resolve import load_data
from ..reproduce import EXECUTORS, TABLES, ResultStore, build_grid, run_grid, write_outputs
from ..reproduce.cost import estimate, format_estimate
from ..runner.jobs import method_of
from ..runner.storage import open_storage
from .common import add_compute_args, add_level, arch_name, out_file, positive_int, run_dir, seed_int, tell


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable reproduce` sub-command to the parser."""
    p = sub.add_parser("reproduce", help="the paper's tables as resumable experiment grids (local or Ray)",
                       description="Run the cells of one of the paper's tables on DATASET, caching every "
                                   "cell in a SQLite result store. Tables: "
                                   + "; ".join(f"{k}: {v}" for k, v in TABLES.items()))
    p.add_argument("table", choices=list(TABLES), help="which table or figure")
    p.add_argument("--dataset", required=True, help="dataset name (fashion-mnist, cifar10, digits, ...)")
    p.add_argument("--arch", action="append", default=None, type=arch_name,
                   help="architecture (repeatable; table4 makes one column per arch; default convnet)")
    add_level(p)
    p.add_argument("--steps", default=None,
                   help="with the `steps` table: comma-separated audit steps and attack:NAME columns")
    p.add_argument("--methods", default=None,
                   help="comma-separated poisons for the rows (default: every registered poison cheap "
                        "enough for the level); the clean set is always a row")
    p.add_argument("--subset", type=positive_int, default=None,
                   help="train on a seeded random subset of this many training images (default: all)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the level's training epochs")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of every cell (default 0)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="leaderboard: every cell on N seeds, --seed, --seed + 1, ... (default 1)")
    p.add_argument("--attacks", default=None,
                   help="leaderboard: comma-separated attack columns, or `all` (default: the level's panel)")
    p.add_argument("--executor", default="local", choices=list(EXECUTORS),
                   help="local (in process, sequential; default) or ray (one Ray task per cell)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. auto or HOST:6379); default: a local Ray instance on 127.0.0.1")
    p.add_argument("--artifacts", default=None, metavar="DIR_OR_URL",
                   help="where job artifacts live: a directory (on a cluster, one every node mounts) or an "
                        "fsspec URL such as s3://bucket/path that every node can reach (default: --out)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads of every job, recorded with its result: the same value gives the same "
                        "numbers on any executor (default 1)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="local executor: independent jobs run side by side in this many processes (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and a cost estimate; run nothing")
    p.add_argument("--retry-failed", action="store_true", help="rerun cells that failed before")
    p.add_argument("--db", default="runs/results.sqlite", type=out_file,
                   help="result store (default runs/results.sqlite)")
    p.add_argument("--out", default="runs/reproduce", type=run_dir,
                   help="artifacts and tables (default runs/reproduce)")
    add_compute_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable reproduce` with the parsed arguments; the exit code."""
    if Path(args.out).resolve() == Path(args.db).resolve():
        raise UnlearnableError(f"--out {args.out}: is the result store --db {args.db}; choose another --out")
    if args.artifacts is not None:
        open_storage(args.artifacts)  # an unknown protocol or a missing package: one line, before any work
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    steps = None if args.steps is None else [s.strip() for s in args.steps.split(",") if s.strip()]
    attacks = None if args.attacks is None else (
        [a for a in ATTACKS if a != "none"] if args.attacks.strip() == "all"
        else [a.strip() for a in args.attacks.split(",") if a.strip()])
    grid = build_grid(args.table, args.dataset, args.arch, args.level, methods, args.seed, args.subset, args.epochs,
                      steps, args.data_root, seeds=args.seeds, attacks=attacks)
    if args.dry_run:
        return dry_run(grid, args)
    progress = False if args.no_progress else None
    with ResultStore(args.db) as store:
        def on_done(key: str, out: dict) -> None:
            job = store.get(key)
            what = _describe(job["spec"])
            state = "done" if out["ok"] else f"FAILED: {out['error']}"
            tell(f"  {key[:12]} {what}: {state} ({out['seconds']:.1f}s)")

        s = run_grid(grid, store, args.out, args.executor, args.address, args.device, progress,
                     args.data_root, args.retry_failed, on_done, artifacts=args.artifacts,
                     threads=args.threads, workers=args.workers)
        paths = write_outputs(grid.layout(), store, args.out)
        print(open(paths["md"]).read())
        print(f"{grid.table} on {grid.dataset}: {s.total} jobs, {s.cached} cached, {len(s.ran)} ran, "
              f"{len(s.failed)} failed, {len(s.blocked)} blocked, {len(s.skipped_failed)} failed earlier "
              f"(--retry-failed reruns them); {s.seconds:.1f}s -> {', '.join(str(p) for p in paths.values())}")
        return 1 if (s.failed or s.blocked or s.skipped_failed) else 0


def _describe(spec: dict) -> str:
    detail = spec.get("attack") or spec.get("of") or spec.get("arch") or spec.get("run", {}).get("arch", "")
    return f"{spec['kind']} {method_of(spec)} {detail}".strip()


def dry_run(grid, args: argparse.Namespace) -> int:
    """`--dry-run`: print the grid and a cost estimate of the jobs --db does not hold yet; run nothing."""
    train = load_data(grid.dataset, "train", args.data_root)
    test = load_data(grid.dataset, "test", args.data_root)
    done: set[str] = set()
    if Path(args.db).exists():  # read only: a dry run creates no database
        try:
            with ResultStore(args.db, create=False) as store:
                done = {j["key"] for j in store.jobs("done")}
        except UnlearnableError as e:
            tell(f"unlearnable: note: {e}")

    est = estimate(grid, train.chw, train.num_classes, len(train), len(test), done, str(resolve_device(args.device)))
    print(format_estimate(grid, est))
    return 0
