"""The demo: protect Fashion-MNIST with the fast generators, audit each, compare them.

    unlearnable demo                      # what `make demo` runs
    unlearnable demo --methods random-noise,regions,lsp,ops,ar --attacks ortho-proj,jpeg --out runs/demo2

Every protected set is made from the same seeded subset of the training images, so the clean
reference (and the random network's DFR) is one job of the shared cache that every audit reuses.
Everything is reused from `--out` and the cache when rerun; one demo at a time per `--out`.
A step that fails in any audit is listed in each result's and in summary.json's `failed_steps`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError, one_line
from ..core.files import atomic_file, write_json
from ..core.lock import dir_lock
from ..runner import JobContext, ResultStore, run_jobs
from .config import AuditConfig
from .pipeline import run_audit
from .report import render_comparison_html, render_comparison_md


DEMO_QUICK_EPOCHS = 9  # the demo's epochs at the quick level


@dataclass
class DemoConfig:
    """What `unlearnable demo` protects and audits: the base data and subset, the methods, the level,
    the attacks."""
    data: str = "fashion-mnist"
    # The three model-free protections that hold against standard training at this level (Regions-4,
    # LSP, AR; random noise and OPS do not: docs/poisons.md) and the paper's attack on them.
    methods: tuple[str, ...] = ("regions", "lsp", "ar")
    # 20,000 images x 9 epochs of the fast recipe (about 700 SGD steps, what 3 epochs of all
    # 60,000 give) is where these protections start to hold on 2 CPU cores; with one attack the
    # whole demo takes 7.8 minutes there (measured; see the README). None: all images.
    subset: int | None = 20000
    level: str = "quick"
    arch: str = "convnet"
    seed: int = 0
    attacks: tuple[str, ...] | None = ("ortho-proj",)
    # None: DEMO_QUICK_EPOCHS at the quick level, the level's own epochs otherwise.
    epochs: int | None = None


log = logging.getLogger(__name__)


def make_sets(out: Path, cfg: DemoConfig, data_root: str | os.PathLike[str] | None,
              progress: bool | None) -> list[Path]:
    """The protected sets as poison jobs (out/jobs.sqlite), written to out/data/NAME: made once,
    reused on a rerun. They are made as published (level "paper": AR's full filter search)."""
    specs = [{"kind": "poison", "method": m, "params": {}, "dataset": cfg.data, "subset": cfg.subset,
              "seed": cfg.seed, "level": "paper"} for m in cfg.methods]
    ctx = JobContext(out, progress=progress, data_root=str(data_root) if data_root else None,
                     place=lambda spec: out / "data" / spec["method"])
    with ResultStore(out / "jobs.sqlite") as store:
        # A set that failed before is tried again: its cause (a device, a full disk) may be gone.
        s = run_jobs(specs, store, ctx, retry_failed=True, on_start=lambda spec, i, n: log.info(
            "demo: making the %s protected set ...", spec["method"]))
        bad = s.failed + s.skipped_failed
        if bad:
            row = store.get(bad[0])
            raise UnlearnableError(f"demo: the {row['spec'].get('method')} protected set could not be made: "
                                   f"{one_line(row['error'])}")
    return [out / "data" / m for m in cfg.methods]


def run_demo(out: str | os.PathLike[str] = "runs/demo", cfg: DemoConfig | None = None,
             data_root: str | os.PathLike[str] | None = None, progress: bool | None = None,
             cache: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Protect `cfg.data` with each method, audit every set into OUT/METHOD, and write the comparison
    (report.html, report.md, summary.json); reruns reuse everything finished."""

    cfg = cfg or DemoConfig()
    out = Path(out)
    t0 = time.perf_counter()
    epochs = cfg.epochs if cfg.epochs is not None else (DEMO_QUICK_EPOCHS if cfg.level == "quick" else None)
    audit_cfg = AuditConfig(arch=cfg.arch, level=cfg.level, seed=cfg.seed, epochs=epochs,
                            attacks=cfg.attacks)
    out.mkdir(parents=True, exist_ok=True)
    with dir_lock(out, "demo"):
        return _demo(out, cfg, audit_cfg, data_root, progress, cache, t0)


def _demo(out: Path, cfg: DemoConfig, audit_cfg: AuditConfig, data_root: str | os.PathLike[str] | None,
          progress: bool | None, cache: str | os.PathLike[str] | None, t0: float) -> list[dict[str, Any]]:
    sets = make_sets(out, cfg, data_root, progress)

    results = []
    for m, d in zip(cfg.methods, sets):
        log.info("demo: auditing %s ...", m)
        r = run_audit(d, out / m, audit_cfg, data_root=data_root, progress=progress, cache=cache)
        r["_dir"] = m
        results.append(r)
        for step, why in r.get("failed_steps", {}).items():
            log.warning("demo: %s: step %s failed: %s", m, step, why)

    seconds = time.perf_counter() - t0
    title = f"Do unlearnable datasets protect? {cfg.data}, {cfg.arch}, level {cfg.level}"
    with atomic_file(out / "report.html", "w") as f:
        f.write(render_comparison_html(results, out, title, [f"{m}/report.html" for m in cfg.methods]))
    with atomic_file(out / "report.md", "w") as f:
        f.write(render_comparison_md(results, title))
    write_json(out / "summary.json", {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "clean_reference": (results[0].get("clean_reference") or {}).get("test_accuracy") if results else None,
        "rows": [{"dataset": r["dataset"]["name"], "verdict": r["verdict"]} for r in results],
        "failed_steps": {r["_dir"]: r["failed_steps"] for r in results if r.get("failed_steps")},
        "seconds": round(seconds, 1),
    })
    log.info("demo: %d protected sets audited in %.1f min -> %s", len(results), seconds / 60, out / "report.html")
    return results
