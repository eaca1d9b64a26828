"""Seconds per model-free poison on a whole training set (target: < 60 s on 2 CPU cores).

    .venv/bin/python benchmarks/poisons_speed.py [--data fashion-mnist] [--subset N] [--methods ar,lsp] [--level paper]

Prints one line per method: seconds to generate (data already loaded), images per second and the
measured l_inf / mean l2 of the stored perturbation. Timings include the AR filter search.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unlearnable import load_data
from unlearnable.data import random_subset
from unlearnable.ladder import LEVELS
from unlearnable.poisons import POISONS, PoisonContext, make_poison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--methods", default=",".join(m for m in POISONS if not POISONS[m].model_based),
                    help="comma-separated poisons (default: every model-free one)")
    ap.add_argument("--level", default="paper", choices=LEVELS,
                    help="ladder level: parameters a method leaves unset (default paper, the originals')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = load_data(args.data, "train")
    if args.subset:
        base = base.subset(random_subset(base, args.subset, args.seed))
    c, h, w = base.chw
    print(f"{args.data}: {len(base)} images {c}x{h}x{w}, {base.num_classes} classes "
          f"(loaded in {time.perf_counter() - t0:.1f}s), torch threads {torch.get_num_threads()}")
    for method in args.methods.split(","):
        t = time.perf_counter()
        p = make_poison(method, base, {}, ctx=PoisonContext(seed=args.seed, level=args.level, progress=False))
        dt = time.perf_counter() - t
        d = (p.images.astype(np.int16) - base.images.astype(np.int16)).reshape(len(base), -1)
        linf = np.abs(d).max() / 255
        l2 = float(np.sqrt((d.astype(np.float32) ** 2).sum(1)).mean() / 255)
        print(f"  {method:<13} {dt:7.2f} s  {len(base) / dt:9.0f} img/s  "
              f"l_inf {linf * 255:5.1f}/255  l2 mean {l2:.3f}", flush=True)


if __name__ == "__main__":
    main()
