"""The demo: protect Fashion-MNIST with the fast generators, audit each, compare them.

    unlearnable demo                      # what `make demo` runs
    unlearnable demo --methods random-noise,regions,lsp,ops,ar --attacks ortho-proj,jpeg --out runs/demo2

Every protected set is made from the same seeded subset of the training images, so one clean
reference run serves all the audits. Everything is reused from `--out` when rerun.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_file, read_json, write_json
from ..data.resolve import load_base, load_data
from ..data.store import is_dataset_dir, load_dataset_dir
from ..train.run import spec_for, train_on
from .pipeline import AuditConfig, run_audit
from .report import render_comparison_html, render_comparison_md, summary_text


DEMO_QUICK_EPOCHS = 9  # the demo's epochs under the quick budget


@dataclass
class DemoConfig:
    data: str = "fashion-mnist"
    # The three model-free protections that hold against standard training at this budget (Regions-4,
    # LSP, AR; random noise and OPS do not: docs/poisons.md) and the paper's attack on them.
    methods: tuple[str, ...] = ("regions", "lsp", "ar")
    # 20,000 images x 9 epochs of the fast recipe (about 700 SGD steps, what 3 epochs of all
    # 60,000 give) is where these protections start to hold on 2 CPU cores; with one attack the
    # whole demo takes 7.8 minutes there (measured; see the README). None: all images.
    subset: int | None = 20000
    budget: str = "quick"
    arch: str = "convnet"
    seed: int = 0
    attacks: tuple[str, ...] | None = ("ortho-proj",)
    # None: DEMO_QUICK_EPOCHS under the quick budget, the budget's own epochs otherwise.
    epochs: int | None = None


def run_demo(out: str | os.PathLike[str] = "runs/demo", cfg: DemoConfig | None = None,
             data_root: str | os.PathLike[str] | None = None, progress: bool | None = None,
             say=lambda m: print(m, flush=True)) -> list[dict[str, Any]]:
    from ..poisons.make import poison_dataset

    cfg = cfg or DemoConfig()
    out = Path(out)
    t0 = time.perf_counter()
    epochs = cfg.epochs if cfg.epochs is not None else (DEMO_QUICK_EPOCHS if cfg.budget == "quick" else None)
    audit_cfg = AuditConfig(arch=cfg.arch, budget=cfg.budget, seed=cfg.seed, epochs=epochs,
                            attacks=cfg.attacks)
    sets: list[Path] = []
    for m in cfg.methods:
        d = out / "data" / m
        if not is_dataset_dir(d):
            say(f"demo: making the {m} protected set ...")
            poison_dataset(m, cfg.data, d, seed=cfg.seed, subset=cfg.subset, data_root=data_root)
        sets.append(d)

    # One clean reference for all: the base images of every set are the same seeded subset.
    first = load_dataset_dir(sets[0])
    base = load_base(first, data_root)
    test = load_data(cfg.data, "test", data_root)
    ref_dir = out / "clean-reference"
    if not (ref_dir / "result.json").exists():
        say("demo: training the clean reference ...")
        train_on(base, test, spec_for(base, cfg.arch, audit_cfg.recipe(), cfg.seed, f"{cfg.data} (clean)"),
                 ref_dir, audit_cfg.device, progress)

    results = []
    for m, d in zip(cfg.methods, sets):
        say(f"demo: auditing {m} ...")
        r = run_audit(d, out / m, audit_cfg, data_root=data_root, progress=progress,
                      clean_reference=ref_dir)
        r["_dir"] = m
        results.append(r)

    seconds = time.perf_counter() - t0
    title = f"Do unlearnable datasets protect? {cfg.data}, {cfg.arch}, budget {cfg.budget}"
    with atomic_file(out / "report.html", "w") as f:
        f.write(render_comparison_html(results, out, title, [f"{m}/report.html" for m in cfg.methods]))
    with atomic_file(out / "report.md", "w") as f:
        f.write(render_comparison_md(results, title))
    write_json(out / "summary.json", {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "clean_reference": read_json(ref_dir / "result.json")["test_accuracy"],
        "rows": [{"dataset": r["dataset"]["name"], "verdict": r["verdict"]} for r in results],
        "seconds": round(seconds, 1),
    })
    say(summary_text(results))
    say(f"demo: {len(results)} protected sets audited in {seconds / 60:.1f} min -> {out / 'report.html'}")
    return results
