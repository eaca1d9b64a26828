"""Every attack on the clean set and on each model-free protected set, side by side.

    .venv/bin/python benchmarks/attack_table.py --subset 5000 --epochs 3 --out runs/attack-table
    .venv/bin/python benchmarks/attack_table.py --subset 10000 --level quick --methods regions,lsp,ar,cuda,em,ops \
        --attacks dvae,coin,ortho-proj,adv-train --out runs/purify-table

For each training set (the clean seeded subset, then random-noise, regions, lsp, ops, ar made
from that same subset) runs `unlearnable attack all` (none + the chosen attacks) with the fast
recipe (or, with --level, each poison crafted, each attack parameterized and trained as that
rung of the ladder says) and prints one Markdown table of clean test accuracy (the better of plain and
transformed test inputs) and one of wall time relative to standard training. Results are
reused from --out when rerun. Progress goes to stderr (the library's logging).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from unlearnable import load_data, load_dataset_dir, poison_dataset, save_dataset
from unlearnable.attacks import ATTACKS as ATTACK_INFO, AttackContext
from unlearnable.poisons import PoisonContext
from unlearnable.kinds import run_all
from unlearnable.data import random_subset
from unlearnable.data.resolve import load_base
from unlearnable.data.store import is_dataset_dir
from unlearnable.ladder import recipe_for

ATTACKS = ["ortho-proj", "adv-train", "jpeg", "grayscale", "bit-depth", "cutmix", "ueraser-lite"]
METHODS = ["random-noise", "regions", "lsp", "ops", "ar"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=None, help="fast recipe epochs (default 3; with --level its own)")
    ap.add_argument("--level", default=None, help="tiny, quick or paper: the ladder's poisons, recipe and presets")
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--out", default="runs/attack-table")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (default cpu)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = Path(a.out)
    attacks = [x for x in a.attacks.split(",") if x]
    if a.level is None:  # what `attack all --recipe fast --epochs E` trains
        recipe = recipe_for(preset="fast", epochs=a.epochs or 3)
    else:
        recipe = recipe_for(a.level, epochs=a.epochs)
    params = {n: ATTACK_INFO[n].preset(a.level) for n in attacks} if a.level else None
    full = load_data(a.data, "train")
    test = load_data(a.data, "test")
    idx = random_subset(full, a.subset, a.seed)
    clean_dir = out / "data" / "clean"
    if not is_dataset_dir(clean_dir):
        save_dataset(clean_dir, full.subset(idx), {"method": "none", "seed": a.seed,
                                                   "base": {"name": a.data, "num_samples": len(full)}})
    sets = {"clean": clean_dir}
    for m in a.methods.split(","):
        d = out / "data" / m
        if not is_dataset_dir(d):
            ctx = PoisonContext(seed=a.seed, level=a.level or "paper", device=a.device, progress=False)
            poison_dataset(m, a.data, d, seed=a.seed, subset=a.subset, ctx=ctx)
        sets[m] = d
    t0 = time.perf_counter()
    summaries = {}
    for name, d in sets.items():
        ds = load_dataset_dir(d)
        # Grayscale is a no-op on one channel: not run there, shown as such.
        use = [x for x in attacks if not (x == "grayscale" and ds.channels == 1)]
        ctx = AttackContext(ds, test, a.arch, recipe, a.seed, out / "attacks" / name, device=a.device,
                            progress=False, clean=load_base(ds), data_name=name)
        summaries[name] = run_all(ctx, use, params)
    cols = ["none"] + attacks
    how = f"level {a.level}" if a.level else "fast recipe"
    print(f"# {a.data}, {a.arch}, {a.subset} training images, {how}: {recipe.epochs} epochs, seed {a.seed}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {time.perf_counter() - t0:.0f} s\n")
    for title, key, fmt in (("Clean test accuracy (%)", "test_accuracy_best", lambda v: f"{100 * v:.1f}"),
                            ("Wall time relative to standard training", "cost_vs_standard_training",
                             lambda v: f"{v:.2f}x")):
        print(f"## {title}\n\n| training set | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
        for name, s in summaries.items():
            rows = {r["attack"]: r for r in s["rows"]}
            cells = [fmt(rows[c][key]) if c in rows else "no-op" for c in cols]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
