"""What one audit costs, in standard trainings of the same set, measured in one process.

    .venv/bin/python benchmarks/audit_cost.py                       # all 60,000 Fashion-MNIST images
    .venv/bin/python benchmarks/audit_cost.py --subset 10000 --work /tmp/audit-cost-10k

Makes two protected versions of one base (`--methods`, default regions then lsp; not timed), then
in this one process: (1) one standard training of the first set, as `unlearnable train DATA
--recipe fast --epochs 3` runs it (the level's recipe, a checkpoint and a test pass per epoch);
(2) `unlearnable audit` of the first set at `--level` with an empty shared cache; (3) the audit of
the second set with that cache, so its clean reference and random-network DFR are reused; (4) the
standard training again; (5) unless --no-exhaustive, the second set audited again with
`--exhaustive` (warm cache, its own directory): the whole panel of the level, what a set that
holds pays, since "holds" needs every family to fail. The unit is the mean of (1) and (4), both in a process that has paid
its one-time imports first. Prints each audit's cost over that
unit (and over the audit's own protected training) and the per-step breakdown, twice: in wall
seconds and in CPU seconds of this process (both torch threads and the jpeg threads; far less
sensitive than wall time to other processes on a shared machine, so the CPU ratio is the one to
compare between runs).
A step that ran no job in this audit (a shared job computed earlier) is marked "reused". The load
average is printed before and after. --work is emptied first (its cache too), except the protected
sets, so each run measures from nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch


def _load() -> str:  # 1, 5 and 15-minute load averages
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class Clock:
    """Wall and CPU seconds (this process, every thread) of every job the runner runs, by key."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[str, float, float]] = {}

    def install(self) -> None:
        from unlearnable.runner import JOBS, job_key

        for name, kind in list(JOBS.items()):
            def timed(spec, ctx, deps, _run=kind.run, _name=name):
                w, c = time.perf_counter(), time.process_time()
                try:
                    return _run(spec, ctx, deps)
                finally:
                    self.jobs[job_key(spec)] = (_name, time.perf_counter() - w, time.process_time() - c)
            JOBS[name] = dataclasses.replace(kind, run=timed)


def measure(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def report(m: str, w: float, c: float, rec: dict, jobs: dict, tw: float, tc: float, load: str) -> None:
    v = rec.get("verdict", {})
    ran = [k for k in rec.get("attacks", {}) if k != "none"]
    skipped = [n.split(":", 1)[1] for n, st in rec["steps"].items() if n.startswith("attack:")
               and st["status"] == "skipped"]
    print(f"## audit of {m}: {w:.1f} s wall = {w / tw:.2f} trainings; {c:.1f} s CPU = {c / tc:.2f} trainings "
          f"(verdict: {v.get('overall')}; failed steps: {sorted(rec.get('failed_steps', {})) or 'none'}; "
          f"load at its end {load})\n")
    print(f"attacks run: {', '.join(ran) or 'none'}; skipped: {', '.join(skipped) or 'none'}\n")
    print("| step | wall s | CPU s | trainings (wall) | trainings (CPU) |\n|---|---:|---:|---:|---:|")
    step_of = {st["key"]: name for name, st in rec["steps"].items() if st.get("key")}
    sw = sc = 0.0
    for name, st in rec["steps"].items():
        if st.get("key") not in jobs:
            print(f"| {name} | - | - | - | {'reused' if st['status'] == 'done' else st['status']} |")
    for key, (kind, jw, jc) in jobs.items():
        sw, sc = sw + jw, sc + jc
        print(f"| {step_of.get(key, f'({kind}, a dependency)')} | {jw:.1f} | {jc:.1f} | {jw / tw:.2f} | "
              f"{jc / tc:.2f} |")
    print(f"| (outside the jobs: loading, hashing, figures, report) | {w - sw:.1f} | {c - sc:.1f} | "
          f"{(w - sw) / tw:.2f} | {(c - sc) / tc:.2f} |\n")
    own = next((jw for key, (kind, jw, jc) in jobs.items() if step_of.get(key) == "train-protected"), None)
    if own:  # the same training inside the audit, measured in the same minutes: a second unit
        print(f"against the audit's own train-protected ({own:.1f} s wall): {w / own:.2f} trainings\n")
    accs = {k: r.get("test_accuracy_best", r.get("test_accuracy")) for k, r in rec.get("attacks", {}).items()}
    print("accuracies: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in accs.items() if v is not None) + "\n",
          flush=True)


def levers(train, test, arch: str, seed: int) -> None:
    """Per-lever CPU costs on `train` (an ImageSet), relative to one epoch of standard training."""
    import numpy as np

    from unlearnable.train.pgd import adversarial_loss
    from unlearnable.attacks.squeeze import _jpeg_one, jpeg_compress
    from unlearnable.ladder import recipe_for
    from unlearnable.train.loop import evaluate, fit
    from unlearnable.train.run import as_tensors, spec_for

    recipe = recipe_for("quick").replace(epochs=1)
    spec = spec_for(train, arch, recipe, seed)
    xy, (xt, yt) = as_tensors(train), as_tensors(test)
    cpu = {}
    for name, loss in (("standard epoch", None),
                       ("Free epoch, 3 replays (quick)",
                        adversarial_loss(adversary="free", steps=1, replays=3)),
                       ("FGSM-RS epoch", adversarial_loss(adversary="fgsm-rs", steps=1)),
                       ("PGD-3 epoch", adversarial_loss())):
        model = spec.build()
        cpu[name] = measure(lambda: fit(model, xy, None, spec.recipe, seed, progress=False, batch_loss=loss))[1]
        if name == "standard epoch":
            cpu[f"test pass ({len(xt)} images)"] = measure(lambda: evaluate(model, xt, yt, recipe.eval_batch_size))[1]
    images = train.images
    _, c_one, alone = measure(lambda: np.stack([_jpeg_one(im[..., 0] if im.shape[2] == 1 else im, 10)
                                                for im in images]))
    _, c_mosaic, got = measure(lambda: jpeg_compress(images, 10))
    same = np.array_equal(alone.reshape(got.shape), got)
    cpu[f"JPEG one by one ({len(images)} images)"] = c_one
    cpu[f"JPEG mosaics (jpeg_compress; same pixels: {same})"] = c_mosaic
    base = cpu["standard epoch"]
    print(f"| what ({len(train)} training images) | CPU s | per standard epoch |\n|---|---:|---:|")
    for k, v in cpu.items():
        print(f"| {k} | {v:.1f} | {v / base:.2f} |")
    print(f"\n# load average after: {_load()}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=None, help="a seeded subset of the base (default: all)")
    ap.add_argument("--methods", default="regions,lsp", help="the first is audited cold, the second warm")
    ap.add_argument("--level", default="quick")
    ap.add_argument("--arch", default="convnet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/audit-cost", help="emptied first; sets, runs and the cache")
    ap.add_argument("--levers", action="store_true", help="per-lever CPU costs instead of whole audits")
    ap.add_argument("--no-exhaustive", action="store_true",
                    help="skip the exhaustive audit of the second set (the whole panel: a set that holds)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from unlearnable.core.malloc import tune_malloc

    tuned = tune_malloc()  # as the command does (UNLEARNABLE_MALLOC=system: glibc's defaults)
    from unlearnable import poison_dataset
    from unlearnable.auditor.pipeline import AuditConfig, run_audit
    from unlearnable.ladder import recipe_for
    from unlearnable.train.run import train_data

    work = Path(a.work)
    methods = [m for m in a.methods.split(",") if m]
    sets = {}
    for m in methods:  # kept between runs: making a set is not what is measured
        d = work / "data" / f"{m}-{a.subset or 'all'}-{a.seed}"
        if not d.exists():
            poison_dataset(m, a.data, d, seed=a.seed, subset=a.subset)
        sets[m] = d
    if a.levers:
        from unlearnable import load_data, load_dataset_dir

        print(f"# levers: {a.data} ({a.subset or 'all'} images of {methods[0]}), {a.arch}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; load average before: {_load()}\n", flush=True)
        levers(load_dataset_dir(sets[methods[0]]), load_data(a.data, "test"), a.arch, a.seed)
        return 0
    for sub in ("standard", "audits", "cache"):
        shutil.rmtree(work / sub, ignore_errors=True)
    clock = Clock()
    clock.install()
    recipe = recipe_for(a.level)
    print(f"# {a.data} ({a.subset or 'all'} images), {a.arch}, level {a.level} ({recipe.epochs} epochs of "
          f"batch {recipe.batch_size}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, malloc thresholds {'fixed' if tuned else 'as glibc sets them'}")
    print(f"# load average (1/5/15 min) before: {_load()}\n", flush=True)
    def standard() -> tuple[float, float]:
        shutil.rmtree(work / "standard", ignore_errors=True)
        tw, tc, _ = measure(lambda: train_data(sets[methods[0]], a.arch, recipe, a.seed, work / "standard",
                                               progress=False))
        print(f"standard training ({methods[0]}): {tw:.1f} s wall, {tc:.1f} s CPU (load now {_load()})\n",
              flush=True)
        return tw, tc

    # Paid once per process, before anything is timed: torch imports torch._dynamo (about 1.5 s)
    # when the first optimizer is made. Otherwise the first unit carries it and the audits do not.
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    # The unit is measured before and after the audits and averaged: on a shared (virtual) machine
    # one 25-30 s training varies by 20 % from one minute to the next.
    before = standard()
    audits = []
    for m in methods:
        clock.jobs.clear()
        w, c, rec = measure(lambda: run_audit(sets[m], work / "audits" / m, AuditConfig(
            arch=a.arch, level=a.level, seed=a.seed), progress=False, cache=work / "cache"))
        audits.append((m, w, c, rec, dict(clock.jobs), _load()))
    if not a.no_exhaustive:
        m = methods[-1]
        clock.jobs.clear()
        w, c, rec = measure(lambda: run_audit(sets[m], work / "audits" / f"{m}-exhaustive", AuditConfig(
            arch=a.arch, level=a.level, seed=a.seed, exhaustive=True), progress=False, cache=work / "cache"))
        audits.append((f"{m}, --exhaustive (the whole panel)", w, c, rec, dict(clock.jobs), _load()))
    after = standard()
    tw, tc = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    print(f"# one standard training (the unit): {tw:.1f} s wall, {tc:.1f} s CPU, the mean of the runs before and "
          f"after the audits\n", flush=True)
    for m, w, c, rec, jobs, load in audits:
        report(m, w, c, rec, jobs, tw, tc, load)
    print(f"# load average after: {_load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
