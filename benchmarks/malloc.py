"""What glibc's allocator thresholds cost a CPU training (`unlearnable.core.malloc`), measured.

    .venv/bin/python benchmarks/malloc.py                          # all 60,000 Fashion-MNIST images
    .venv/bin/python benchmarks/malloc.py --subset 10000 --repeats 1

Makes one protected set (`--method`, not timed), then runs `unlearnable train DATA --recipe fast
--epochs 3` in fresh processes, alternately with glibc's defaults (UNLEARNABLE_MALLOC=system) and
with the thresholds the command fixes, `--repeats` times each. Prints per run the wall seconds,
user and system CPU seconds and minor page faults of the child, and whether both settings trained
the same network (the last epoch's loss and test accuracy, compared exactly); then the medians
and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(data: Path, out: Path, mode: str) -> dict:
    env = {**os.environ, "UNLEARNABLE_MALLOC": mode}
    cmd = [sys.executable, "-c", "import sys; from unlearnable.cli import main; sys.exit(main())", "-q", "train", str(data), "--recipe", "fast", "--epochs", "3",
           "--out", str(out), "--no-progress"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {status}")
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    return {"mode": mode, "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "faults": ru.ru_minflt,
            "net": (last["train_loss"], last["test_accuracy"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--method", default="regions")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default=None, help="where the set is kept (default: a temporary directory)")
    a = ap.parse_args()
    from unlearnable import poison_dataset

    work = Path(a.work or tempfile.mkdtemp(prefix="malloc-bench-"))
    data = work / f"{a.method}-{a.subset or 'all'}"
    if not data.exists():
        poison_dataset(a.method, a.data, data, seed=0, subset=a.subset)
    print(f"# {a.method} on {a.data} ({a.subset or 'all'} images), `unlearnable train --recipe fast --epochs 3`, "
          f"{os.cpu_count()} CPUs; load before {os.getloadavg()[0]:.2f}\n")
    print("| run | malloc | wall s | user s | sys s | minor faults |\n|---|---|---:|---:|---:|---:|")
    rows = []
    for i in range(a.repeats):
        for mode in ("system", "tuned"):
            r = run(data, work / f"run-{mode}-{i}", mode)
            rows.append(r)
            print(f"| {i + 1} | {mode} | {r['wall']:.1f} | {r['user']:.1f} | {r['sys']:.1f} | {r['faults']:,} |",
                  flush=True)
    med = {m: {k: statistics.median(r[k] for r in rows if r["mode"] == m) for k in ("wall", "sys", "faults")}
           for m in ("system", "tuned")}
    same = len({r["net"] for r in rows}) == 1
    print(f"\nmedian wall: glibc defaults {med['system']['wall']:.1f} s, fixed thresholds {med['tuned']['wall']:.1f} s: "
          f"{med['system']['wall'] / med['tuned']['wall']:.2f}x; system time {med['system']['sys']:.1f} s vs "
          f"{med['tuned']['sys']:.1f} s; page faults {med['system']['faults']:,.0f} vs {med['tuned']['faults']:,.0f}; "
          f"the same network every run: {same}; load after {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
