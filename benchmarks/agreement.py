"""Does the sequential audit say what the whole panel says? (issue 31, item 5)

    .venv/bin/python benchmarks/agreement.py --subset 10000 --level quick --work /tmp/agreement

For the clean set and every poison the leaderboard runs at the level (`--methods`, default the
poisons `reproduce leaderboard` takes), made on a seeded `--subset` of `--data`: (1) the level's
audit as a user runs it (sequential: the panel by promise, stopping at the first break), then
(2) the same audit directory rerun with `--exhaustive`, which runs the attacks the first one
skipped and nothing else. Prints, per set, both verdicts, the breaking attacks, the attacks the
sequential one ran and skipped, the trainings each cost (attack jobs that ran, in standard
trainings of the level's recipe by the registry's cost model) and whether the overall verdicts
agree; a disagreement prints both reasons. Markdown on stdout (docs/leaderboard.md keeps it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--level", default="quick")
    ap.add_argument("--methods", default=None, help="comma-separated poisons (default: the leaderboard's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/agreement", help="sets, audits and the shared cache")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from unlearnable import load_data, poison_dataset, save_dataset
    from unlearnable.attacks import level_cost
    from unlearnable.auditor import AuditConfig, run_audit
    from unlearnable.data.subsets import random_subset
    from unlearnable.reproduce import default_methods

    work = Path(a.work)
    methods = a.methods.split(",") if a.methods else default_methods(a.level)
    print(f"# {a.data}, {a.subset} images, level {a.level}, seed {a.seed}; load average before "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}\n", flush=True)
    print("| set | sequential verdict | broken by | attacks run (skipped) | trainings | exhaustive verdict | "
          "broken by | trainings | agree |\n|---|---|---|---|---:|---|---|---:|---|", flush=True)
    agree, notes, t0 = 0, [], time.perf_counter()
    for m in ["clean", *methods]:
        d = work / "data" / f"{m}-{a.subset}-{a.seed}"
        if not d.exists():
            if m == "clean":
                full = load_data(a.data, "train")
                sub = full.subset(random_subset(full, a.subset, a.seed))
                save_dataset(d, sub, {"method": "clean", "kind": "clean", "base": {"name": a.data}}, base=sub)
            else:
                poison_dataset(m, a.data, d, seed=a.seed, subset=a.subset)
        out = work / "audits" / m
        seq = run_audit(d, out, AuditConfig(level=a.level, seed=a.seed), progress=False, cache=work / "cache")
        full_rec = run_audit(d, out, AuditConfig(level=a.level, seed=a.seed, exhaustive=True), progress=False,
                             cache=work / "cache")

        def cost(rec) -> float:
            return sum(level_cost(k, a.level) for k in rec["attacks"])  # "none" is the protected training

        ran = [k for k in seq["attacks"] if k != "none"]
        skipped = [n.split(":", 1)[1] for n, st in seq["steps"].items()
                   if n.startswith("attack:") and st["status"] == "skipped"]
        vs, vf = seq["verdict"], full_rec["verdict"]
        same = vs["overall"] == vf["overall"]
        agree += same
        if not same:
            notes.append(f"- {m}: sequential {vs['overall']}: {vs['reason']} / exhaustive {vf['overall']}: "
                         f"{vf['reason']}")
        print(f"| {m} | {vs['overall']}{' (borderline)' if vs.get('borderline') else ''} | "
              f"{', '.join(vs['broken_by']) or '–'} | {', '.join(ran) or '–'} ({', '.join(skipped) or '–'}) | "
              f"{cost(seq):.1f} | {vf['overall']}{' (borderline)' if vf.get('borderline') else ''} | "
              f"{', '.join(vf['broken_by']) or '–'} | {cost(full_rec):.1f} | {'yes' if same else '**no**'} |",
              flush=True)
    n = len(methods) + 1
    print(f"\nagreement: {agree} of {n} sets ({100 * agree / n:.0f} %); {time.perf_counter() - t0:.0f} s; load average "
          f"after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for line in notes:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
