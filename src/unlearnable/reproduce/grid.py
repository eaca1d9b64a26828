"""The paper's tables as grids of job specs.

    grid = build_grid("table3", "fashion-mnist", budget="quick", methods=["regions", "lsp"])
    grid.cells   # [Cell(row="regions", col="none", spec={...}), ...]
    grid.jobs()  # every job to run, dependencies (poisons, training) included, each once

Rows are the training sets ("clean" plus one per poison); columns follow the paper:

    table1  max DFR accuracy / min DFR loss per protected set, + the random-init row (Table 1)
    table2  linear separability of the perturbations (Table 2; the clean row: of the images)
    table3  none / adversarial training / orthogonal projection (Table 3)
    table4  Table 1's max DFR accuracy across architectures (one column per --arch)
    table6  linear separability of the images, mean +- std over repeats (Table 6)
    fig2    DFR accuracy over epochs (Fig. 2), the same jobs as table1

Budgets come from the full audit's (`unlearnable.auditor.BUDGETS`: tiny, quick, paper).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .._io import UnlearnableError
from .jobs import Spec, canonical, data_spec, dependencies, job_key

TABLES: dict[str, str] = {
    "table1": "Table 1: max DFR accuracy and min DFR loss per protected set (+ random init)",
    "table2": "Table 2: linear separability of the perturbations",
    "table3": "Table 3: clean test accuracy under none / adversarial training / orthogonal projection",
    "table4": "Table 4: max DFR accuracy across architectures",
    "table6": "Table 6: linear separability of the images (mean +- std over repeats)",
    "fig2": "Figure 2: DFR accuracy over training epochs",
}
TABLE3_ATTACKS = ("none", "adv-train", "ortho-proj")

# Poisons that train no network: seconds to make, so every budget includes them by default.
# A poison may also say so itself with a `model_based` attribute on its PoisonInfo.
MODEL_FREE = frozenset({"random-noise", "regions", "lsp", "ops", "ar"})


@dataclass
class Cell:
    row: str
    col: str
    spec: Spec

    @property
    def key(self) -> str:
        return job_key(self.spec)


@dataclass
class Grid:
    table: str
    dataset: str
    archs: list[str]
    budget: str
    seed: int
    subset: int | None
    rows: list[str]
    cols: list[str]
    cells: list[Cell] = field(default_factory=list)

    @property
    def grid_id(self) -> str:
        """Content hash of the grid's definition (its cells' keys in order)."""
        h = hashlib.sha256(canonical(self.layout()).encode())
        return h.hexdigest()

    def layout(self) -> dict[str, Any]:
        """What the result store keeps to render the table later (`unlearnable results`)."""
        return {"table": self.table, "dataset": self.dataset, "archs": self.archs, "budget": self.budget,
                "seed": self.seed, "subset": self.subset, "rows": self.rows, "cols": self.cols,
                "cells": [{"row": c.row, "col": c.col, "key": c.key} for c in self.cells]}

    def jobs(self) -> list[Spec]:
        """Every job the grid needs, each once, dependencies before their dependents."""
        seen: dict[str, Spec] = {}

        def add(spec: Spec) -> None:
            for d in dependencies(spec):
                add(d)
            seen.setdefault(job_key(spec), spec)

        for c in self.cells:
            add(c.spec)
        return list(seen.values())


def model_based(name: str) -> bool:
    from ..poisons import POISONS

    info = POISONS.get(name)
    flag = getattr(info, "model_based", None)
    return bool(flag) if flag is not None else name not in MODEL_FREE


def default_methods(budget: str) -> list[str]:
    """Every registered poison cheap enough for the budget (model-based ones only for `paper`)."""
    from ..poisons import POISONS

    return [m for m in sorted(POISONS) if budget == "paper" or not model_based(m)]


def _recipe(budget: str, attack: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    from ..auditor import BUDGETS
    from ..train.engine import get_recipe

    b = BUDGETS[budget]
    r = get_recipe(b.adv_recipe) if attack == "adv-train" and b.adv_recipe else get_recipe(b.recipe)
    epochs = epochs or (None if attack == "adv-train" and b.adv_recipe else b.epochs)
    if epochs and epochs != r.epochs:
        kw: dict[str, Any] = {"epochs": epochs}
        if r.schedule == "step" and r.milestones:  # keep the milestones at the same fractions
            kw["milestones"] = tuple(max(1, round(m * epochs / r.epochs)) for m in r.milestones)
        r = r.replace(**kw)
    return r.to_dict()


def _attack_params(budget: str, attack: str) -> dict[str, str]:
    # The PGD accuracy figure of adv-train is a side result; on tiny budgets a 100-image test
    # subset keeps it to seconds.
    if attack == "adv-train" and budget == "tiny":
        return {"eval_samples": "100"}
    return {}


def build_grid(table: str, dataset: str, archs: list[str] | None = None, budget: str = "quick",
               methods: list[str] | None = None, seed: int = 0, subset: int | None = None,
               epochs: int | None = None) -> Grid:
    """The cells of `table` for `dataset`.

    Args:
        table: a key of `TABLES`.
        dataset: a registered dataset name (its train split is protected, its test split clean).
        archs: architectures (default ["convnet"]; table4 uses one column per arch).
        budget: tiny | quick | paper (recipes, DFR subset size, L-BFGS steps, repeats).
        methods: poisons for the rows (default `default_methods(budget)`); "clean" is always a row.
        seed: seed of every job (subset, poison, initialization, order).
        subset: train on a seeded subset of this many training images (None: all).
        epochs: override the budget's training epochs (every training job, adv-train included).
    """
    from ..auditor import BUDGETS
    from ..poisons import POISONS

    if table not in TABLES:
        raise UnlearnableError(f"unknown table {table!r} (known: {', '.join(TABLES)})")
    if budget not in BUDGETS:
        raise UnlearnableError(f"unknown budget {budget!r} (known: {', '.join(BUDGETS)})")
    if epochs is not None and epochs < 1:
        raise UnlearnableError(f"--epochs must be at least 1, got {epochs}")
    if subset is not None and subset < 1:
        raise UnlearnableError(f"--subset must be at least 1, got {subset}")
    archs = list(archs or ["convnet"])
    from ..models import MODELS

    bad = [a for a in archs if a not in MODELS]
    if bad:
        raise UnlearnableError(f"unknown architecture(s) {bad} (known: {', '.join(sorted(MODELS))})")
    methods = list(default_methods(budget) if methods is None else methods)
    unknown = [m for m in methods if m not in POISONS and m != "clean"]
    if unknown:
        raise UnlearnableError(f"unknown poison(s) {unknown} (known: {', '.join(sorted(POISONS))})")
    rows = ["clean"] + [m for m in dict.fromkeys(methods) if m != "clean"]
    b = BUDGETS[budget]
    data = {m: data_spec(dataset, m, subset, seed, budget=budget) for m in rows}
    common = {"dataset": dataset, "subset": subset, "seed": seed}

    def train(m: str, arch: str) -> Spec:
        return {"kind": "train", **common, "data": data[m], "arch": arch, "recipe": _recipe(budget, None, epochs)}

    def dfr(m: str, arch: str) -> Spec:
        return {"kind": "dfr", **common, "run": train(m, arch), "n": b.dfr_n}

    def sep(m: str, of: str, repeats: int) -> Spec:
        return {"kind": "separability", **common, "data": data[m], "of": of, "steps": b.separability_steps,
                "repeats": repeats, "n": b.separability_n}

    cells: list[Cell] = []
    if table in ("table1", "fig2"):
        cols = ["dfr"]
        cells = [Cell(m, "dfr", dfr(m, archs[0])) for m in rows]
    elif table == "table4":
        cols = archs
        cells = [Cell(m, a, dfr(m, a)) for m in rows for a in archs]
    elif table == "table2":
        cols = ["perturbations"]
        # The clean row has no perturbation; the paper reports the clean images there.
        cells = [Cell(m, "perturbations", sep(m, "images" if m == "clean" else "perturbations", 1)) for m in rows]
    elif table == "table6":
        cols = ["images"]
        # The paper: 10 repeats; at least 3 so a std means something on the smaller budgets.
        reps = max(b.separability_repeats, 3)
        cells = [Cell(m, "images", sep(m, "images", reps)) for m in rows]
    else:  # table3
        cols = list(TABLE3_ATTACKS)
        for m in rows:
            for a in cols:
                if a == "none":
                    # Standard training is the `train` job: shared with table1's DFR runs.
                    cells.append(Cell(m, a, train(m, archs[0])))
                else:
                    cells.append(Cell(m, a, {"kind": "attack", **common, "data": data[m], "attack": a,
                                             "params": _attack_params(budget, a), "arch": archs[0],
                                             "recipe": _recipe(budget, a, epochs)}))
    return Grid(table, dataset, archs, budget, seed, subset, rows, cols, cells)
