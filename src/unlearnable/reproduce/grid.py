"""The paper's tables as grids of job specs, built from the audit's step registry.

    grid = build_grid("table3", "fashion-mnist", level="quick", methods=["regions", "lsp"])
    grid.cells   # [Cell(row="regions", col="none", spec={...}), ...]
    grid.jobs()  # every job to run, dependencies (poisons, training) included, each once

Rows are the training sets ("clean" plus one per poison); columns follow the paper:

    table1  max DFR accuracy / min DFR loss per protected set, + the random-init row (Table 1)
    table2  linear separability of the perturbations (Table 2; the clean row: of the images)
    table3  none / adversarial training / orthogonal projection (Table 3)
    table4  Table 1's max DFR accuracy across architectures (one column per --arch)
    table6  linear separability of the images, mean +- std over repeats (Table 6)
    fig2    DFR accuracy over epochs (Fig. 2), the same jobs as table1
    steps   any registered audit steps and attacks as columns (`steps=["dfr", "attack:jpeg"]`)
    leaderboard  standard training and every attack of the level's panel (or `attacks`) per
            poison, on `seeds` seeds (seed, seed + 1, ...: each its own subset, poison and
            initialization), rendered with the worst case per poison (`leaderboard.py`)

Every cell is the job spec the audit's step registry (`unlearnable.auditor.steps.AUDITS`, and
`attack:NAME` for every attack) makes for that row at that ladder level, so an audit and a grid
at the same level ask for the same recipe, and a newly registered step or attack can be a column.
The clean row's data is identified by content (the seeded subset's checksum), the poison rows by
the spec that makes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS, panel
from ..auditor.steps import AUDITS, Row, StepSkipped, attack_step, get_step, separability_spec
from ..core.errors import UnlearnableError
from ..core.registry import lookup, lookup_all
from ..core.stats import check_seeds
from ..data.identity import content_id
from ..data.imageset import ImageSet
from ..data.resolve import load_data
from ..data.subsets import random_subset
from ..kinds.data import split_ref
from ..ladder import Level, level as get_level
from ..models import MODELS, arch_signature
from ..poisons import POISONS
from ..runner.executors import run_jobs
from ..runner.jobs import JobContext, Spec, dependencies, expand, job_key
from ..runner.scheduler import GridSummary
from ..runner.storage import open_storage
from ..runner.store import ResultStore

TABLES: dict[str, str] = {
    "table1": "Table 1: max DFR accuracy and min DFR loss per protected set (+ random init)",
    "table2": "Table 2: linear separability of the perturbations",
    "table3": "Table 3: clean test accuracy under none / adversarial training / orthogonal projection",
    "table4": "Table 4: max DFR accuracy across architectures",
    "table6": "Table 6: linear separability of the images (mean +- std over repeats)",
    "fig2": "Figure 2: DFR accuracy over training epochs",
    "steps": "Audit steps side by side",
    "leaderboard": "Leaderboard: every poison against every attack of a level's panel, over seeds",
}
TABLE3_ATTACKS = ("none", "adv-train", "ortho-proj")


@dataclass
class Cell:
    """One cell of a table: its row (training set), column, and the job spec that computes it
    (on `seed`, for a table over several; None: the grid's one seed)."""
    row: str
    col: str
    spec: Spec
    seed: int | None = None

    @property
    def key(self) -> str:
        return job_key(self.spec)


@dataclass
class Grid:
    """A table as job specs: its rows and columns, the cells, and what `unlearnable results` needs to
    render it later."""
    table: str
    dataset: str
    archs: list[str]
    level: str
    seed: int
    subset: int | None
    rows: list[str]
    cols: list[str]
    cells: list[Cell] = field(default_factory=list)
    seeds: list[int] | None = None  # a table over several seeds (the leaderboard)
    crafting: dict[str, dict[str, str]] = field(default_factory=dict)  # row -> seed -> its poison job's key

    @property
    def grid_id(self) -> str:
        """Content hash of the grid's definition (its cells' keys in order)."""
        return job_key(self.layout())  # the same rule as a job's identity

    def layout(self) -> dict[str, Any]:
        """What the result store keeps to render the table later (`unlearnable results`)."""
        over = {"seeds": self.seeds, "crafting": self.crafting} if self.seeds is not None else {}
        return {"table": self.table, "dataset": self.dataset, "archs": self.archs, "level": self.level,
                "seed": self.seed, "subset": self.subset, "rows": self.rows, "cols": self.cols,
                "cells": [{"row": c.row, "col": c.col, "key": c.key, **({"seed": c.seed} if c.seed is not None else {})}
                          for c in self.cells], **over}

    def jobs(self) -> list[Spec]:
        """Every job the grid needs, each once, dependencies before their dependents."""
        return expand([c.spec for c in self.cells])


def default_methods(level: str) -> list[str]:
    """Every registered poison cheap enough for the level (model-based ones only for `paper`)."""
    return [m for m in sorted(POISONS) if level == "paper" or not POISONS[m].model_based]


def build_grid(table: str, dataset: str, archs: list[str] | None = None, level: str = "quick",
               methods: list[str] | None = None, seed: int = 0, subset: int | None = None,
               epochs: int | None = None, steps: list[str] | None = None,
               data_root: str | None = None, seeds: int = 1, attacks: list[str] | None = None) -> Grid:
    """The cells of `table` for `dataset`.

    Args:
        table: a key of `TABLES`.
        dataset: a registered dataset name (its train split is protected, its test split clean).
        archs: architectures (default ["convnet"]; table4 uses one column per arch).
        level: tiny | quick | paper (the ladder: recipes, DFR subset size, L-BFGS steps, repeats).
        methods: poisons for the rows (default `default_methods(level)`); "clean" is always a row.
        seed: seed of every job (subset, poison, initialization, order).
        subset: train on a seeded subset of this many training images (None: all).
        epochs: override the level's training epochs (every training job, adv-train included).
        steps: the columns of the "steps" table (audit step names, `attack:NAME`).
        seeds: the leaderboard's number of seeds (seed, seed + 1, ...); 1 for every other table.
        attacks: the leaderboard's attack columns (default the level's panel); "none" is always one.
    """
    lookup(TABLES, table, "table")
    lv = get_level(level)
    if epochs is not None and epochs < 1:
        raise UnlearnableError(f"--epochs must be at least 1, got {epochs}")
    if subset is not None and subset < 1:
        raise UnlearnableError(f"--subset must be at least 1, got {subset}")
    archs = list(archs or ["convnet"])
    lookup_all(MODELS, archs, "architecture")
    methods = list(default_methods(level) if methods is None else methods)
    lookup_all(POISONS, [m for m in methods if m != "clean"], "poison")
    if table == "steps":
        if not steps:
            raise UnlearnableError("the steps table needs --steps (audit steps or attack:NAME)")
        for name in steps:
            get_step(name)
    check_seeds(seeds)
    if seeds > 1 and table != "leaderboard":
        raise UnlearnableError(f"--seeds {seeds}: only the leaderboard runs over several seeds; "
                               f"run {table} once per --seed")
    if attacks is not None and table != "leaderboard":
        raise UnlearnableError(f"--attacks: only the leaderboard takes its attack columns; {table}'s are fixed")
    rows = ["clean"] + [m for m in dict.fromkeys(methods) if m != "clean"]
    full = load_data(dataset, "train", data_root)
    # The test and pool splits by content too: a base whose files change gets new jobs.
    test_ref, pool_ref = split_ref(dataset, load_data(dataset, "test", data_root), "test"), split_ref(dataset, full)
    row = _rows(full, dataset, lv, seed, subset, epochs, test_ref, pool_ref)

    def spec(r: Row, step: str) -> Spec | None:
        try:
            return get_step(step).spec(r)
        except StepSkipped:
            return None

    cells: list[Cell] = []
    if table in ("table1", "fig2"):
        cols = ["dfr"]
        cells = [Cell(m, "dfr", AUDITS["dfr"].spec(row(m, archs[0]))) for m in rows]
    elif table == "table4":
        cols = archs
        cells = [Cell(m, a, AUDITS["dfr"].spec(row(m, a))) for m in rows for a in archs]
    elif table == "table2":
        cols = ["perturbations"]
        # The clean row has no perturbation; the paper reports the clean images there. That row is
        # every other row's baseline (same N and settings), so the cells carry none of their own.
        cells = [Cell(m, "perturbations", separability_spec(row(m, archs[0]), "images" if m == "clean"
                                                            else "perturbations", 1, baseline=False)) for m in rows]
    elif table == "table6":
        cols = ["images"]
        # The paper: 10 repeats; at least 3 so a std means something on the smaller levels.
        reps = max(lv.separability_repeats, 3)
        cells = [Cell(m, "images", separability_spec(row(m, archs[0]), "images", reps, baseline=False))
                 for m in rows]
    elif table == "table3":
        cols = list(TABLE3_ATTACKS)
        for m in rows:
            r = row(m, archs[0])
            # Standard training is the `train` job: shared with table1's DFR runs.
            cells.append(Cell(m, "none", AUDITS["train-protected"].spec(r)))
            cells += [Cell(m, a, attack_step(a).spec(r)) for a in cols[1:]]
    elif table == "leaderboard":
        cols = ["none"] + [a for a in dict.fromkeys(panel(level) if attacks is None else attacks) if a != "none"]
        lookup_all(ATTACKS, cols, "attack")
        crafting: dict[str, dict[str, str]] = {}
        for s in range(seed, seed + seeds):
            row_s = row if s == seed else _rows(full, dataset, lv, s, subset, epochs, test_ref, pool_ref)
            for m in rows:
                r = row_s(m, archs[0])
                train = AUDITS["train-protected"].spec(r)
                cells.append(Cell(m, "none", train, s))
                cells += [Cell(m, a, sp, s) for a in cols[1:] if (sp := spec(r, f"attack:{a}")) is not None]
                made = [d for d in dependencies(train) if d["kind"] == "poison"]
                if made:
                    crafting.setdefault(m, {})[str(s)] = job_key(made[0])
        return Grid(table, dataset, archs, level, seed, subset, rows, cols, cells,
                    seeds=list(range(seed, seed + seeds)), crafting=crafting)
    else:
        cols = list(steps or [])
        cells = [Cell(m, st, sp) for m in rows for st in cols if (sp := spec(row(m, archs[0]), st)) is not None]
    return Grid(table, dataset, archs, level, seed, subset, rows, cols, cells)


def _rows(full: ImageSet, dataset: str, lv: Level, seed: int, subset: int | None, epochs: int | None,
          test_ref: Spec, pool_ref: Spec) -> Callable[[str, str], Row]:
    """The grid's row maker on `seed`: the clean row by content (the seeded subset of the base
    that every poison row protects), a poison row by the spec that makes it."""
    sample = full.subset(random_subset(full, subset, seed)) if subset is not None and subset < len(full) else full
    clean: Spec = {"content": content_id(sample), "clean": dataset, "_subset": subset, "_seed": seed}

    def row(m: str, arch: str) -> Row:
        data = clean if m == "clean" else {"method": m, "params": {}, "dataset": dataset, "subset": subset,
                                           "seed": seed, "level": lv.name}
        model = arch_signature(arch, sample.num_classes, sample.channels, sample.image_size)
        return Row(data, clean, dataset, sample, lv, arch, model, seed, epochs, TABLE3_ATTACKS[1:],
                   test_ref=test_ref, pool_ref=pool_ref)
    return row


GRID_THREADS = 1  # threads per grid job unless asked otherwise: the same table on every executor


def run_grid(grid: Grid, store: ResultStore, out_root: str | os.PathLike[str], executor: str = "local",
             address: str | None = None, device: str = "auto", progress: bool | None = None,
             data_root: str | None = None, retry_failed: bool = False,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None, artifacts: str | None = None,
             threads: int = GRID_THREADS, workers: int = 1) -> GridSummary:
    """Run every job of a reproduction grid that the store has not finished; record the grid.

    artifacts: where job artifacts live (a directory or an fsspec URL; default `out_root`).
    threads: each job's pinned thread count (recorded with its result). workers: local jobs
    side by side (see `runner.run_jobs`)."""
    store.save_grid(grid.grid_id, grid.layout())
    storage = open_storage(artifacts if artifacts is not None else out_root)
    root = Path(storage.url) if not storage.remote else Path(out_root)
    ctx = JobContext(root, device, progress, data_root, storage=storage, threads=threads)
    return run_jobs([c.spec for c in grid.cells], store, ctx, executor, address, retry_failed,
                    on_done=on_done, ray_init=ray_init, workers=workers)
